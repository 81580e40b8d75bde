"""The model-level injector: inject -> train -> save adapter -> merge -> deploy (and back).

An adapter site's host module (e.g. a block's attention) gets its class swapped for a
subclass whose ``forward`` passes the input through the adapter first, the way
`torch.nn.utils.parametrize` swaps classes. The base parameters keep their names and
modules, the adapter lives at ``<host>.repadapter``, and the adapted host has timm's
``fuse()`` hook, so `timm.utils.reparameterize_model` deploys an injected model too.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from repadapter._version import __version__
from repadapter.errors import RepAdapterError
from repadapter.families import Family, SiteSpec, family_of
from repadapter.families.factory import constructor_kwargs
from repadapter.families.generic import GENERIC, target_sites
from repadapter.families.segmenter import SEGMENTER, backbone_family
from repadapter.files import AdapterFile, read_adapter_file, tensors_sha256, write_adapter_file
from repadapter.layers.adapter import RepAdapter
from repadapter.layers.fold import (
    AffineMap,
    Projection,
    fold_into,
    fold_into_producer,
    projection,
    unfold_from,
    unfold_from_producer,
)
from repadapter.tuner.config import RepAdapterConfig

ADAPTER_ATTR = "repadapter"


@dataclass(frozen=True)
class _Site:
    """A resolved adapter site: live modules, not paths (see `SiteSpec` for the fields)."""

    path: str
    host: nn.Module
    consumers: tuple[str, ...]
    bias_sink: nn.Module | None
    in_features: int
    bias: bool
    batch_norms: tuple[nn.Module | None, ...] = ()
    output: bool = False
    channels_first: bool = False
    not_foldable: str | None = None
    input_norm: nn.Module | None = None  # the norm whose output is the host's input (SiteSpec.bias_sink)

    def describe(self) -> dict[str, Any]:
        sink = "consumer" if self.bias_sink is None else "norm"
        described: dict[str, Any] = {
            "consumers": list(self.consumers),
            "in_features": self.in_features,
            "bias": sink if self.bias else "none",
        }
        if self.output:
            described["side"] = "output"
        if self.channels_first:
            described["layout"] = "channels_first"
        return described


# --- the adapted host class ------------------------------------------------------------------

_ADAPTED_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}


def _new_adapted(base_cls: type[nn.Module]) -> nn.Module:
    """Unpickling / deepcopy constructor for an adapted host."""
    return object.__new__(_adapted_class(base_cls))


def _adapted_class(base_cls: type[nn.Module]) -> type[nn.Module]:
    """The subclass of ``base_cls`` that applies ``self.repadapter`` to its first input."""
    if base_cls in _ADAPTED_CLASSES:
        return _ADAPTED_CLASSES[base_cls]

    first = list(inspect.signature(base_cls.forward).parameters)[1]  # after self

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if _site_of(self).output:
            return _adapter(self)(base_cls.forward(self, *args, **kwargs))
        x = args[0] if args else kwargs[first]
        # also where the same tensor comes again (attention's key and value)
        y = _adapter(self)(x, _norm_of(self, x))
        args = tuple(y if arg is x else arg for arg in args)
        kwargs = {key: y if arg is x else arg for key, arg in kwargs.items()}
        return base_cls.forward(self, *args, **kwargs)

    def fuse(self: nn.Module) -> nn.Module:
        """timm's re-parameterization hook: fold the adapter in, become ``base_cls`` again."""
        _fold_host(self)
        return self

    def __reduce_ex__(self: nn.Module, protocol: Any) -> Any:  # noqa: N807
        reduced = super(cls, self).__reduce_ex__(protocol)
        return (_new_adapted, (base_cls,), *reduced[2:])

    cls: type[nn.Module] = type(
        f"RepAdapted{base_cls.__name__}",
        (base_cls,),
        {"forward": forward, "fuse": fuse, "__reduce_ex__": __reduce_ex__, "__module__": __name__},
    )
    _ADAPTED_CLASSES[base_cls] = cls
    return cls


def _is_adapted(module: nn.Module) -> bool:
    return type(module) in _ADAPTED_CLASSES.values()


def _adapted_hosts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if _is_adapted(m)]


def has_adapters(model: nn.Module) -> bool:
    """Whether ``model`` holds injected (not merged) RepAdapters."""
    return bool(_adapted_hosts(model))


def _adapter(host: nn.Module) -> RepAdapter:
    return cast(RepAdapter, host.repadapter)


def _site_of(host: nn.Module) -> _Site:
    return host.__dict__["repadapter_site"]


def _base_type(module: nn.Module) -> type[nn.Module]:
    return type(module).__bases__[0] if _is_adapted(module) else type(module)


def _projection(module: nn.Module, batch_norm: nn.Module | None = None) -> Projection:
    return projection(module, batch_norm, kind=_base_type(module))


def _projections(
    host: nn.Module, consumers: tuple[str, ...], batch_norms: tuple[nn.Module | None, ...]
) -> list[Projection]:
    norms = batch_norms or (None,) * len(consumers)
    return [_projection(host.get_submodule(name), norm) for name, norm in zip(consumers, norms, strict=True)]


def _consumer_projections(site: _Site) -> list[Projection]:
    return _projections(site.host, site.consumers, site.batch_norms)


def _check_foldable(site: _Site) -> None:
    if site.not_foldable:
        raise RepAdapterError(f"cannot merge the adapter at {site.path}: {site.not_foldable}")


def _fold_host(host: nn.Module) -> None:
    site = _site_of(host)
    _check_foldable(site)
    affine = _adapter(host).affine()
    if site.output:
        fold_into_producer(_projection(host), affine, site.path)
    else:
        fold_into(_consumer_projections(site), site.bias_sink, affine, site.path)
    _remove_adapter(host)


def _unfold_host(host: nn.Module, affine: AffineMap) -> None:
    site = _site_of(host)
    if site.output:
        unfold_from_producer(_projection(host), affine, site.path)
    else:
        unfold_from(_consumer_projections(site), site.bias_sink, affine, site.path)


# A site's input norm -> weak references to its latest input and output (kept off the module,
# so that nothing of a forward pass is deep-copied or pickled with the model).
_NORM_IO: weakref.WeakKeyDictionary[nn.Module, tuple[weakref.ref[torch.Tensor], weakref.ref[torch.Tensor]]]
_NORM_IO = weakref.WeakKeyDictionary()


def _remember_norm_io(norm: nn.Module, args: tuple[Any, ...], output: Any) -> None:
    """Forward hook on a site's input norm: its latest input and output, by weak reference."""
    tensors = bool(args) and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor)
    if tensors and torch.is_grad_enabled():
        _NORM_IO[norm] = (weakref.ref(args[0]), weakref.ref(output))


def _watch_norm(norm: nn.Module, watch: bool) -> None:
    hooks = norm._forward_hooks
    for key in [key for key, hook in hooks.items() if hook is _remember_norm_io]:
        del hooks[key]
    _NORM_IO.pop(norm, None)
    if watch:
        norm.register_forward_hook(_remember_norm_io)


def _norm_of(host: nn.Module, x: Any) -> tuple[nn.Module, torch.Tensor] | None:
    """The site's input norm and that norm's input, when ``x`` is exactly that norm's latest
    output and backward will want the adapter's input; otherwise None (the adapter keeps ``x``)."""
    norm = _site_of(host).input_norm
    if norm is None or not torch.is_grad_enabled() or not isinstance(x, torch.Tensor):
        return None
    if torch.is_autocast_enabled(x.device.type):  # backward would recompute outside autocast
        return None
    refs = _NORM_IO.get(norm)
    if refs is None or refs[1]() is not x:
        return None
    source = refs[0]()
    return None if source is None else (norm, source)


def _remove_adapter(host: nn.Module) -> None:
    site = _site_of(host)
    if site.input_norm is not None:
        _watch_norm(site.input_norm, watch=False)
    del host.repadapter
    del host.__dict__["repadapter_site"]
    host.__class__ = type(host).__bases__[0]


# --- planning and injection -------------------------------------------------------------------


def _family(model: nn.Module, config: RepAdapterConfig) -> Family:
    """The family whose placements and head ``config`` uses; any model with ``target_modules``."""
    if config.target_modules:
        try:
            return family_of(model)
        except RepAdapterError:
            return GENERIC
    return family_of(model)


def _site_specs(model: nn.Module, family: Family, config: RepAdapterConfig) -> list[SiteSpec]:
    if config.target_modules:
        return target_sites(model, config.target_modules)
    if config.placement not in family.placements:
        raise RepAdapterError(
            f"placement={config.placement!r} does not exist for {family.name} models; "
            f"use one of {family.placements}, or name layers with target_modules=..."
        )
    return family.sites(model, config.placement)


def _plan(model: nn.Module, family: Family, config: RepAdapterConfig) -> list[_Site]:
    """Resolve every site and check it, touching nothing."""
    sites = []
    for spec in _site_specs(model, family, config):
        host = model.get_submodule(spec.host)
        if isinstance(host, nn.Sequential | nn.ModuleList | nn.ModuleDict):
            raise RepAdapterError(
                f"{spec.host} is a {type(host).__name__}, whose forward would run its adapter as one "
                "more layer; host the adapter on the first layer inside it instead"
            )
        norms = tuple(model.get_submodule(p) if p else None for p in spec.batch_norms)
        sink = model.get_submodule(spec.bias_sink) if spec.bias_sink else None
        if spec.not_foldable:
            width, bias, sink = cast(nn.Conv2d, host).in_channels, True, None
        elif spec.output:
            producer = _projection(host)
            width, bias = producer.out_features, producer.bias is not None
        else:
            consumers = _projections(host, spec.consumers, norms)
            widths = {layer.in_features for layer in consumers}
            if len(widths) != 1:
                raise RepAdapterError(f"{spec.host}: consumers {spec.consumers} disagree on width {widths}")
            (width,) = widths
            if not all(layer.takes_shift for layer in consumers):
                sink, bias = None, False
            elif all(layer.bias is not None for layer in consumers):
                sink, bias = None, True
            else:
                bias = isinstance(getattr(sink, "bias", None), nn.Parameter)
                sink = sink if bias else None
        if width % config.groups:
            raise RepAdapterError(
                f"groups={config.groups} does not divide the width {width} at {spec.host}; "
                "pick groups that divide both dim and the model width"
            )
        input_norm = None
        if spec.bias_sink and not spec.channels_first:
            input_norm = model.get_submodule(spec.bias_sink)
        sites.append(
            _Site(
                spec.host, host, spec.consumers, sink, width, bias,
                norms, spec.output, spec.channels_first, spec.not_foldable, input_norm,
            )
        )  # fmt: skip
    return sites


def _trained_names(model: nn.Module, family: Family, config: RepAdapterConfig) -> list[str]:
    """Names of the parameters an injection trains: adapters, head, ``config.trainable``."""
    heads = family.head_prefixes(model) if config.train_head else ()
    patterns: list[re.Pattern[str]] = []
    for text in config.trainable:
        try:
            patterns.append(re.compile(text))
        except re.error as err:
            raise RepAdapterError(f"trainable pattern {text!r} is not a valid regex: {err}") from err
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(pattern.search(name) for name in names):
            raise RepAdapterError(
                f"trainable pattern {pattern.pattern!r} matches no parameter of this model; "
                f"parameter names look like {names[:3]}"
            )
    return [
        name
        for name in names
        if f".{ADAPTER_ATTR}." in name
        or any(name.startswith(f"{head}.") for head in heads)
        or any(p.search(name) for p in patterns)
    ]


def inject(model: nn.Module, config: RepAdapterConfig | None = None) -> nn.Module:
    """Insert RepAdapters into ``model`` in place and freeze everything they do not train.

    Trainable afterwards: the adapters, the classifier head (``config.train_head``) and base
    parameters matching ``config.trainable``. Returns ``model``.
    """
    config = config or RepAdapterConfig()
    if _adapted_hosts(model):
        raise RepAdapterError(
            "this model already has RepAdapters; merge it, or build a fresh model, before injecting again"
        )
    family = _family(model, config)
    sites = _plan(model, family, config)
    trained = set(_trained_names(model, family, config))
    bias_free = [site.path for site in sites if not site.bias]
    if bias_free:
        warnings.warn(
            f"{len(bias_free)} adapter site(s) ({', '.join(bias_free[:3])}, ...) have a consumer "
            "without bias (or a zero-padded convolution) and no norm bias before them: their "
            "adapters are built bias-free so that merging stays exact and adds no parameter",
            stacklevel=2,
        )
    for site in sites:
        ref = next(site.host.parameters())
        adapter = RepAdapter(
            site.in_features,
            config.dim,
            config.groups,
            config.scale,
            config.dropout,
            bias=site.bias,
            channels_first=site.channels_first,
        ).to(device=ref.device, dtype=ref.dtype)
        adapter.train(site.host.training)  # a model in eval mode must not start dropping out
        site.host.__class__ = _adapted_class(type(site.host))
        site.host.repadapter = adapter
        site.host.__dict__["repadapter_site"] = site
        if site.input_norm is not None:
            _watch_norm(site.input_norm, watch=True)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trained or f".{ADAPTER_ATTR}." in name)
    model.__dict__["repadapter_config"] = config
    model.__dict__.pop("repadapter_merged", None)
    return model


def _injected_submodules(model: nn.Module) -> list[str]:
    """The names of the submodules that were injected (``inject(clip.visual)``), where ``model``
    itself was not."""
    if "repadapter_config" in model.__dict__:
        return []
    return [name for name, m in model.named_modules() if "repadapter_config" in m.__dict__]


def adapter_config(model: nn.Module) -> RepAdapterConfig:
    """The config ``model`` was injected with; an error if it has no adapters."""
    if not _adapted_hosts(model) or "repadapter_config" not in model.__dict__:
        if "repadapter_merged" in model.__dict__:
            raise RepAdapterError(
                "this model was already merged (its adapters are folded into its weights); "
                "use repadapter.unmerge(model, adapter_file) to get the adapters back"
            )
        parts = _injected_submodules(model)
        if parts:
            raise RepAdapterError(
                f"the RepAdapters of this model were injected into its submodule {parts[0]!r}, not into "
                f"the model: call this on model.{parts[0]}, or inject the whole model (a CLIP model "
                "takes its adapters in the image tower and freezes the rest)"
            )
        raise RepAdapterError("this model has no RepAdapters; call repadapter.inject(model, config) first")
    return model.__dict__["repadapter_config"]


# --- merge and unmerge ------------------------------------------------------------------------


def _check_mergeable(model: nn.Module) -> None:
    """Refuse, before anything changes, adapters that cannot fold or whose shift cannot go
    through ``M^-1`` into a norm."""
    for _, host in _adapted_hosts(model):
        site = _site_of(host)
        _check_foldable(site)
        if site.bias_sink is not None:
            _adapter(host).affine().check_invertible(site.path)


def merge(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every adapter into the layers after it; returns the vanilla architecture.

    The result's ``state_dict()`` loads with ``strict=True`` into a model built without
    adapters, and computes the same function in eval mode. Works on a copy unless ``inplace``.
    A model whose submodules were injected (``inject(clip.visual)``, then ``merge(clip)``) has
    those submodules merged.
    """
    parts = _injected_submodules(model) if _adapted_hosts(model) else []
    for part in parts:
        _check_mergeable(model.get_submodule(part))
    if parts:
        if not inplace:
            model = copy.deepcopy(model)
        for part in parts:
            merge(model.get_submodule(part), inplace=True)
        return model
    config = adapter_config(model)
    _check_mergeable(model)
    if not inplace:
        model = copy.deepcopy(model)
    for _, host in _adapted_hosts(model):
        _fold_host(host)
    del model.__dict__["repadapter_config"]
    model.__dict__["repadapter_merged"] = config
    return model


def unmerge(model: nn.Module, adapter_file: str | os.PathLike[str], inplace: bool = False) -> nn.Module:
    """Exact inverse of `merge`: take the adapters of ``adapter_file`` back out of ``model``.

    ``model`` must be the merged model of that adapter (same base weights, same head). Returns
    the injected model with the file's adapters, as before the merge.
    """
    if _adapted_hosts(model):
        raise RepAdapterError("this model still has RepAdapters; unmerge takes a merged model")
    file = read_adapter_file(adapter_file)
    family = _family(model, file.config)
    sites = _plan(model, family, file.config)
    for site in sites:
        _check_foldable(site)
    _check_file_matches(model, family, sites, file)
    state = model.state_dict()
    for head in family.head_prefixes(model) if file.config.train_head else ():
        for name, tensor in file.tensors.items():
            if name.startswith(f"{head}.") and not torch.equal(
                state[name].cpu(), tensor.to(state[name].dtype)
            ):
                raise RepAdapterError(
                    f"{name} in this model differs from {file.path}: the model was not merged "
                    "from that adapter file, so unmerging it would corrupt the base weights"
                )
    if not inplace:
        model = copy.deepcopy(model)
    inject(model, file.config)
    _load_tensors(model, file, adapters_only=True)
    hosts = [host for _, host in _adapted_hosts(model)]
    affines = [_adapter(host).affine() for host in hosts]
    try:
        for host, affine in zip(hosts, affines, strict=True):
            affine.check_invertible(_site_of(host).path)
    except RepAdapterError:
        for host in hosts:  # leave the merged model as it came
            _remove_adapter(host)
        raise
    for host, affine in zip(hosts, affines, strict=True):
        _unfold_host(host, affine)
    return model


# --- adapter files ----------------------------------------------------------------------------


def _base_model_name(model: nn.Module) -> str | None:
    """timm's ``architecture.tag``, or a Hugging Face model's ``name_or_path``, when recorded."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch, tag = cfg.get("architecture"), cfg.get("tag")
    if arch:
        return f"{arch}.{tag}" if tag else arch
    return getattr(getattr(model, "config", None), "name_or_path", None) or None


def _snapshot(model: nn.Module, label: str) -> AdapterFile:
    """The trained part of an injected model and its description, as an in-memory adapter file."""
    config = adapter_config(model)
    family = _family(model, config)
    state = model.state_dict()
    tensors = {name: state[name].detach().clone() for name in _trained_names(model, family, config)}
    metadata = {
        "library_version": __version__,
        "config": config.to_dict(),
        "family": family.name,
        "base_model": _base_model_name(model),
        "num_classes": getattr(model, "num_classes", None),
        "sites": {path_: _site_of(host).describe() for path_, host in _adapted_hosts(model)},
    }
    backbone = _family_names(model, family)[1]
    if backbone is not None:
        metadata["backbone_family"] = backbone
    base, classes = _base_model_name(model), getattr(model, "num_classes", None)
    if base and family.library == "timm" and isinstance(classes, int):
        # what from_pretrained needs to rebuild a non-default base (depth, image size, ...)
        metadata["base_kwargs"] = constructor_kwargs(model, base, classes)
    return AdapterFile(config=config, metadata=metadata, tensors=tensors, path=label)


def save_adapter(
    model: nn.Module, path: str | os.PathLike[str], backbone: dict[str, Any] | None = None
) -> Path:
    """Write the trained part of an injected model (adapters, head, extras) to ``path``.

    ``backbone`` (JSON-ready) says where the frozen base came from (the training engine gives
    the model name, pretrained or checkpoint, seed); it is stored with the base's
    `backbone_fingerprint`, so that whoever loads the file can check they rebuilt the same base.
    """
    snapshot = _snapshot(model, str(path))
    metadata = snapshot.metadata
    if backbone is not None:
        metadata = {**metadata, "backbone": {**backbone, "sha256": backbone_fingerprint(model)}}
    return write_adapter_file(path, snapshot.tensors, metadata)


def backbone_fingerprint(model: nn.Module) -> str:
    """SHA-256 of every tensor of an injected model that its adapter file does not hold (names,
    dtypes, shapes and bytes, in name order): the frozen base the adapters were trained on."""
    config = adapter_config(model)
    trained = set(_trained_names(model, _family(model, config), config))
    state = model.state_dict()
    return tensors_sha256(
        {n: t for n, t in state.items() if n not in trained and f".{ADAPTER_ATTR}." not in n}
    )


def unload(model: nn.Module) -> nn.Module:
    """Take the adapters out without folding them in: the base model as it was injected."""
    adapter_config(model)
    for _, host in _adapted_hosts(model):
        _remove_adapter(host)
    del model.__dict__["repadapter_config"]
    return model


def load_adapter(model: nn.Module, path: str | os.PathLike[str] | AdapterFile) -> nn.Module:
    """Inject ``model`` with the config saved in ``path`` and load the file's tensors into it;
    ``path`` may also be an adapter file already read (`read_adapter_file`)."""
    return _load(model, path if isinstance(path, AdapterFile) else read_adapter_file(path))


def _load(model: nn.Module, file: AdapterFile) -> nn.Module:
    if _adapted_hosts(model):
        if adapter_config(model) != file.config:
            raise RepAdapterError(
                f"this model already has adapters with config {adapter_config(model)}, but "
                f"{file.path} was saved with {file.config}; load it into a model without adapters"
            )
        family = _family(model, file.config)
        sites = [_site_of(host) for _, host in _adapted_hosts(model)]
    else:
        family = _family(model, file.config)
        check_family(model, family, file)  # before planning: another family's placement may not exist here
        sites = _plan(model, family, file.config)
    _check_file_matches(model, family, sites, file)
    if not _adapted_hosts(model):
        inject(model, file.config)
    _load_tensors(model, file, adapters_only=False)
    return model


def _family_names(model: nn.Module, family: Family) -> tuple[str, str | None]:
    """The family's name and, for a Segmenter, its backbone's family's name."""
    return family.name, backbone_family(model).name if family is SEGMENTER else None


def check_family(model: nn.Module, family: Family, file: AdapterFile) -> None:
    """Refuse a file whose header names another model family (or, for a Segmenter, another
    backbone family) than ``model``'s, saying which family it is for."""
    meta = file.metadata
    name, backbone = _family_names(model, family)
    theirs, their_backbone = meta.get("family"), meta.get("backbone_family")
    if theirs == name and (backbone is None or their_backbone in (None, backbone)):
        return
    made_for = meta.get("base_model") or "a model it does not name"
    wanted = f"{theirs!r}" + (f" with a {their_backbone!r} backbone" if their_backbone else "")
    ours = f"{name!r}" + (f" with a {backbone!r} backbone" if backbone else "")
    part = _submodule_of_family(model, str(theirs))
    fix = (
        f"it fits this model's submodule {part!r}: pass model.{part}"
        if part
        else (f"load it into a model of that family, e.g. {made_for}")
    )
    raise RepAdapterError(
        f"{file.path} is for model family {wanted} (made for {made_for}), but this model is {ours}; {fix}"
    )


def _check_file_matches(model: nn.Module, family: Family, sites: list[_Site], file: AdapterFile) -> None:
    """Refuse a file made for another family, depth, width or head before touching the model."""
    meta, where = file.metadata, file.path
    made_for = f"(it was made for {meta.get('base_model') or 'an unnamed model'})"
    check_family(model, family, file)
    ours = {site.path: site.describe() for site in sites}
    theirs = meta["sites"]
    if set(ours) != set(theirs):
        missing = sorted(set(ours) - set(theirs))
        extra = sorted(set(theirs) - set(ours))
        raise RepAdapterError(
            f"{where} has adapters at {len(theirs)} sites, this model has {len(ours)} {made_for}; "
            f"only in the model: {missing[:4]}, only in the file: {extra[:4]}. Load it into a "
            "model of the same depth."
        )
    for path, described in ours.items():
        if theirs[path] != described:
            raise RepAdapterError(
                f"{where}: the adapter at {path} was made for {theirs[path]}, this model has "
                f"{described} {made_for}. Load it into a model of the same width."
            )
    expected = {n for n in _trained_names(model, family, file.config) if f".{ADAPTER_ATTR}." not in n}
    lacking = sorted(expected - set(file.tensors))
    if lacking:
        raise RepAdapterError(
            f"{where} has no {', '.join(lacking[:4])}, which this model trains with the file's config "
            f"{made_for}; load it into the same architecture"
        )
    state = model.state_dict()
    for name, tensor in file.tensors.items():
        if f".{ADAPTER_ATTR}." in name:
            continue
        if name not in state:
            raise RepAdapterError(f"{where} holds {name}, which this model does not have {made_for}")
        if state[name].shape != tensor.shape:
            hint = ""
            if any(name.startswith(f"{h}.") for h in family.head_prefixes(model)):
                hint = f" Build the model with num_classes={meta.get('num_classes')}."
            raise RepAdapterError(
                f"{where}: {name} has shape {tuple(tensor.shape)} in the file but "
                f"{tuple(state[name].shape)} in this model {made_for}.{hint}"
            )


def _submodule_of_family(model: nn.Module, name: str) -> str | None:
    """The first submodule of ``model`` in the family called ``name`` (a CLIP model's image tower)."""
    for path, module in model.named_modules():
        try:
            if path and family_of(module).name == name:
                return path
        except RepAdapterError:
            continue
    return None


def _load_tensors(model: nn.Module, file: AdapterFile, adapters_only: bool) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in file.tensors.items():
            if adapters_only and f".{ADAPTER_ATTR}." not in name:
                continue
            if name not in params or params[name].shape != tensor.shape:
                raise RepAdapterError(f"{file.path}: tensor {name} does not fit this model")
            params[name].copy_(tensor)


# --- inspection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterCount:
    """Parameter counts of a model, with its adapters split out."""

    total: int
    trainable: int
    adapter: int
    adapter_weights: int

    @property
    def backbone(self) -> int:
        """Parameters that are not adapters."""
        return self.total - self.adapter


def count_parameters(model: nn.Module) -> ParameterCount:
    """Total, trainable and adapter parameters (``adapter_weights`` leaves out biases)."""
    total = trainable = adapter = adapter_weights = 0
    for name, param in model.named_parameters():
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
        if f".{ADAPTER_ATTR}." in name:
            adapter += param.numel()
            adapter_weights += param.numel() if name.endswith("weight") else 0
    return ParameterCount(total, trainable, adapter, adapter_weights)


def perturb_adapters(model: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Fill every adapter tensor with N(0, std^2) noise, for checking merges on non-zero weights."""
    generator = torch.Generator().manual_seed(seed)
    adapter_config(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f".{ADAPTER_ATTR}." in name:
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float64) * std
                param.copy_(noise.to(param.dtype))
    return model
