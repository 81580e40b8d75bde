"""Adapted hosts: the class swap that puts an adapter in front of a module, and folding it out.

An adapter site's host module (e.g. a block's attention) gets its class swapped for a
subclass whose ``forward`` passes the input through the adapter first, the way
`torch.nn.utils.parametrize` swaps classes. The base parameters keep their names and
modules, the adapter lives at ``<host>.repadapter``, and the adapted host has timm's
``fuse()`` hook, so `timm.utils.reparameterize_model` deploys an injected model too. Every
fold of a host, by `repadapter.merge` or by ``fuse()``, is `fold_host`.

The tuner keeps its state in ``module.__dict__`` (out of ``state_dict`` and ``named_modules``),
under the keys named here: `SITE_KEY` on each adapted host, `CONFIG_KEY` on an injected model
and `MERGED_KEY` on a merged one.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from repadapter.errors import RepAdapterError
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

ADAPTER_ATTR = "repadapter"
SITE_KEY = "repadapter_site"  # an adapted host's `Site`
CONFIG_KEY = "repadapter_config"  # an injected model's RepAdapterConfig
MERGED_KEY = "repadapter_merged"  # a merged model's RepAdapterConfig


@dataclass(frozen=True)
class Site:
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
        """The site as an adapter file's header records it."""
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
    return object.__new__(adapted_class(base_cls))


def adapted_class(base_cls: type[nn.Module]) -> type[nn.Module]:
    """The subclass of ``base_cls`` that applies ``self.repadapter`` to its first input."""
    if base_cls in _ADAPTED_CLASSES:
        return _ADAPTED_CLASSES[base_cls]

    first = list(inspect.signature(base_cls.forward).parameters)[1]  # after self

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if site_of(self).output:
            return adapter_of(self)(base_cls.forward(self, *args, **kwargs))
        x = args[0] if args else kwargs[first]
        # also where the same tensor comes again (attention's key and value)
        y = adapter_of(self)(x, _norm_of(self, x))
        args = tuple(y if arg is x else arg for arg in args)
        kwargs = {key: y if arg is x else arg for key, arg in kwargs.items()}
        return base_cls.forward(self, *args, **kwargs)

    def fuse(self: nn.Module) -> nn.Module:
        """timm's re-parameterization hook: fold the adapter in, become ``base_cls`` again."""
        fold_host(self)
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


def is_adapted(module: nn.Module) -> bool:
    """Whether ``module`` is an adapted host (its class swapped by `adapt_host`)."""
    return type(module) in _ADAPTED_CLASSES.values()


def adapted_hosts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, host)`` of every adapted host in ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if is_adapted(m)]


def adapter_of(host: nn.Module) -> RepAdapter:
    """The adapter of an adapted host."""
    return cast(RepAdapter, host.repadapter)


def site_of(host: nn.Module) -> Site:
    """The site an adapted host was planned as."""
    return host.__dict__[SITE_KEY]


def _base_type(module: nn.Module) -> type[nn.Module]:
    return type(module).__bases__[0] if is_adapted(module) else type(module)


def host_projection(module: nn.Module, batch_norm: nn.Module | None = None) -> Projection:
    """`repadapter.layers.fold.projection` of a module, read as its class before adapting."""
    return projection(module, batch_norm, kind=_base_type(module))


def consumer_projections(
    host: nn.Module, consumers: tuple[str, ...], batch_norms: tuple[nn.Module | None, ...]
) -> list[Projection]:
    """The projections of ``host``'s ``consumers`` (with the batch norm after each, if any)."""
    norms = batch_norms or (None,) * len(consumers)
    return [
        host_projection(host.get_submodule(name), norm) for name, norm in zip(consumers, norms, strict=True)
    ]


def _site_projections(site: Site) -> list[Projection]:
    return consumer_projections(site.host, site.consumers, site.batch_norms)


def adapt_host(site: Site, adapter: RepAdapter) -> None:
    """Swap ``site.host``'s class for its adapted one, with ``adapter`` in front."""
    site.host.__class__ = adapted_class(type(site.host))
    site.host.repadapter = adapter
    site.host.__dict__[SITE_KEY] = site
    if site.input_norm is not None:
        _watch_norm(site.input_norm, watch=True)


def remove_adapter(host: nn.Module) -> None:
    """Take the adapter out of an adapted host, unfolded: it becomes its base class again."""
    site = site_of(host)
    if site.input_norm is not None:
        _watch_norm(site.input_norm, watch=False)
    del host.repadapter
    del host.__dict__[SITE_KEY]
    host.__class__ = type(host).__bases__[0]


# --- folding a host ---------------------------------------------------------------------------


def check_foldable(site: Site) -> None:
    """Refuse a site whose adapter cannot fold, naming it and why."""
    if site.not_foldable:
        raise RepAdapterError(f"cannot merge the adapter at {site.path}: {site.not_foldable}")


def fold_host(host: nn.Module) -> None:
    """Fold a host's adapter into the layers after it (or its own, for an output-side site) and
    remove it: the one fold behind `repadapter.merge` and timm's ``fuse()``."""
    site = site_of(host)
    check_foldable(site)
    affine = adapter_of(host).affine()
    if site.output:
        fold_into_producer(host_projection(host), affine, site.path)
    else:
        fold_into(_site_projections(site), site.bias_sink, affine, site.path)
    remove_adapter(host)


def unfold_host(host: nn.Module, affine: AffineMap) -> None:
    """Take ``affine`` back out of the layers `fold_host` folds a host's adapter into."""
    site = site_of(host)
    if site.output:
        unfold_from_producer(host_projection(host), affine, site.path)
    else:
        unfold_from(_site_projections(site), site.bias_sink, affine, site.path)


# --- a site's input norm ----------------------------------------------------------------------

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
    norm = site_of(host).input_norm
    if norm is None or not torch.is_grad_enabled() or not isinstance(x, torch.Tensor):
        return None
    if torch.is_autocast_enabled(x.device.type):  # backward would recompute outside autocast
        return None
    refs = _NORM_IO.get(norm)
    if refs is None or refs[1]() is not x:
        return None
    source = refs[0]()
    return None if source is None else (norm, source)
