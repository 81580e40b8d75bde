"""RepAdapter as a PEFT method, for people who already work with PEFT.

``import repadapter.peft_plugin`` registers the method, then PEFT's own API works:
``get_peft_model(model, RepAdapterPeftConfig())``, ``save_pretrained``,
``PeftModel.from_pretrained``, ``load_adapter``, mixed-adapter batches (``adapter_names=``),
``disable_adapter`` and ``merge_and_unload()``, with the usual ``adapter_config.json`` +
``adapter_model.safetensors``. Import it before loading a saved RepAdapter with PEFT (the saved
config says so in its ``load_with`` field). PEFT is an optional dependency; the rest of
repadapter never imports it.

Where adapters go:

- ``target_modules=None`` (the default) on a model type that `repadapter.inject` supports with
  Linear consumers (timm ViT, Hugging Face ViT / DINOv2 / CLIP vision) puts them where the core
  API does: one adapter per input that the attention's projections share (timm's ``qkv``;
  Hugging Face's ``q_proj``, ``k_proj``, ``v_proj`` together) and one before the MLP. Other
  models need ``target_modules``.
- A named ``nn.Linear``, ``nn.Conv2d`` (groups=1) or ``nn.MultiheadAttention`` (fused
  in-projection) gets an adapter on its input. On a supported model, naming one of several
  layers that share an input (``q_proj`` alone) is refused: name their parent instead.

Saved keys do not contain the adapter name (``...qkv.repadapter_down.weight``), so any name
loads. Adapters are computed in their own dtype and added in the base's, so bfloat16 and
float16 bases work under PEFT's default float32 adapters; merges are float64, cast once. A
targeted layer that cannot take a shift (no bias, zero-padded convolution) gets a bias-free
adapter, so merging never adds a parameter.

PEFT 0.21 accepts only methods named in its ``PeftType`` enum, so registering adds
``PeftType.REPADAPTER`` to that enum first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import torch
from peft import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, check_adapters_to_merge
from peft.utils import PeftType, register_peft_method
from peft.utils.other import AuxiliaryTrainingWrapper
from torch import nn

from repadapter.config import RepAdapterConfig
from repadapter.errors import RepAdapterError
from repadapter.families.base import family_of
from repadapter.layers.adapter import GroupedLinear, bottleneck_affine
from repadapter.layers.fold import AffineMap, fold_into, unfold_from

NAME = "repadapter"
PREFIX = "repadapter_"
LOAD_WITH = (
    "pip install 'repadapter[peft]'; import repadapter.peft_plugin before "
    "peft.PeftModel.from_pretrained (this is a PEFT adapter folder)"
)
BASE = "__base__"  # PEFT's name for "no adapter" in mixed batches
# keys of the first plug-in version, which named the adapter: ...qkv.repadapter_adapters.<name>.down.weight
OLD_KEY = re.compile(r"^(.*)\.repadapter_adapters\.[^.]+\.(down|up)\.(weight|bias)$")


def _add_peft_type() -> Any:
    """``PeftType.REPADAPTER``, added to PEFT's enum if this PEFT does not have it."""
    if "REPADAPTER" not in PeftType.__members__:
        member = str.__new__(PeftType, "REPADAPTER")
        member._name_ = "REPADAPTER"
        member._value_ = "REPADAPTER"
        PeftType._member_map_["REPADAPTER"] = member
        PeftType._value2member_map_["REPADAPTER"] = member
        PeftType._member_names_.append("REPADAPTER")
        type.__setattr__(PeftType, "REPADAPTER", member)
    return PeftType["REPADAPTER"]


@dataclass
class RepAdapterPeftConfig(PeftConfig):
    """PEFT config of RepAdapter: adapters on the inputs of ``target_modules``."""

    dim: int = field(default=8, metadata={"help": "adapter bottleneck width"})
    groups: int = field(default=2, metadata={"help": "groups of the up projection"})
    scale: float = field(default=1.0, metadata={"help": "adapter scale s"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the bottleneck"})
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "layers whose input gets an adapter (names, suffixes or a regex): nn.Linear, "
            "nn.Conv2d, nn.MultiheadAttention, or the parent of layers sharing an input. None: the "
            "core API's placement for the supported model types"
        },
    )
    exclude_modules: list[str] | str | None = field(default=None, metadata={"help": "layers to leave alone"})
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "only these layer indices (as in PEFT's LoRA)"}
    )
    layers_pattern: list[str] | str | None = field(
        default=None, metadata={"help": "name of the layer list layers_to_transform indexes"}
    )
    init_weights: bool = field(
        default=True,
        metadata={"help": "True: new adapters are the identity. False: random, for tests of merging"},
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "other modules to train and save, e.g. ['head']"}
    )
    load_with: str = field(default=LOAD_WITH, metadata={"help": "how to load a saved adapter (informative)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = _add_peft_type()
        RepAdapterConfig(dim=self.dim, groups=self.groups, scale=self.scale, dropout=self.dropout)
        if self.layers_pattern and self.layers_to_transform is None:
            raise RepAdapterError("layers_pattern only works together with layers_to_transform")

    @classmethod
    def from_peft_type(cls, **kwargs: Any) -> PeftConfig:
        if "sites" in kwargs and "format_version" in kwargs:
            raise RepAdapterError(
                "this folder was written by repadapter.save_pretrained, not by PEFT: load it with "
                "repadapter.from_pretrained(folder, model=base), or save PEFT adapters with "
                "PeftModel.save_pretrained"
            )
        return cast(PeftConfig, super().from_peft_type(**kwargs))


class RepAdapterLayer(nn.Module, BaseTunerLayer):
    """A layer whose input passes through the active RepAdapters first.

    The base layer is an ``nn.Linear``, ``nn.Conv2d`` or ``nn.MultiheadAttention`` (the adapter
    folds into it), or a module whose first input is read only by the Linear ``consumers``
    inside it (the adapter folds into all of them).
    """

    adapter_layer_names = ("repadapter_down", "repadapter_up")
    other_param_names = ("repadapter_dropout", "repadapter_scale")

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config: RepAdapterPeftConfig,
        consumers: Sequence[str] = ("",),
        name: str = "",
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.consumers = tuple(consumers)
        layers = [base_layer.get_submodule(path) for path in self.consumers]
        for path, layer in zip(self.consumers, layers, strict=True):
            where = ".".join(p for p in (name, path) if p) or type(base_layer).__name__
            _check_consumer(layer, where, allow_other=len(layers) == 1)
        if isinstance(base_layer, nn.MultiheadAttention):
            self.in_features = base_layer.embed_dim
            self.out_features = base_layer.embed_dim
        else:
            self.in_features = _in_features(layers[0])
            self.out_features = sum(_out_features(layer) for layer in layers)
        self.channels_first = isinstance(base_layer, nn.Conv2d)
        # A shift needs a bias in every consumer, and none that zero-pads.
        self.biased = all(
            getattr(layer, "in_proj_bias" if isinstance(layer, nn.MultiheadAttention) else "bias", None)
            is not None
            and not (isinstance(layer, nn.Conv2d) and _padded(layer))
            for layer in layers
        )
        self.repadapter_down = nn.ModuleDict()
        self.repadapter_up = nn.ModuleDict()
        self.repadapter_dropout = nn.ModuleDict()
        self.repadapter_scale: dict[str, float] = {}
        self._active_adapter = adapter_name
        self.merged_adapters: list[str] = []
        self.update_layer(adapter_name, config)

    def __getattr__(self, name: str) -> Any:
        """Attributes of the base layer (``batch_first``, ``in_proj_weight``...) read through."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            return getattr(self.base_layer, name)

    def _consumers(self) -> list[nn.Module]:
        base = self.get_base_layer()
        return [base.get_submodule(path) for path in self.consumers]

    def update_layer(self, adapter_name: str, config: RepAdapterPeftConfig) -> None:
        if config.dim % config.groups or self.in_features % config.groups:
            raise RepAdapterError(
                f"groups={config.groups} must divide both dim={config.dim} and the width "
                f"{self.in_features} of this layer's input; pick groups from their common divisors"
            )
        down = nn.Linear(self.in_features, config.dim, bias=self.biased)
        up = GroupedLinear(config.dim, self.in_features, config.groups, bias=self.biased)
        if down.weight.device != torch.device("meta"):
            with torch.no_grad():
                nn.init.xavier_uniform_(down.weight)
                if not config.init_weights:  # a non-identity start, so that a merge shows
                    up.weight.normal_(std=0.1)
                    for bias in (down.bias, up.bias):
                        if bias is not None:
                            bias.normal_(std=0.02)
        self.repadapter_down[adapter_name] = down
        self.repadapter_up[adapter_name] = up
        # a layer added to a model in eval mode stays in eval mode
        self.repadapter_dropout[adapter_name] = nn.Dropout(config.dropout).train(self.base_layer.training)
        self.repadapter_scale[adapter_name] = float(config.scale)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    def affine(self, name: str) -> AffineMap:
        """Adapter ``name`` in eval mode, in float64."""
        down = cast(nn.Linear, self.repadapter_down[name])
        return bottleneck_affine(
            down, cast(GroupedLinear, self.repadapter_up[name]), self.repadapter_scale[name]
        )

    def _adapt(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` through adapter ``name``, computed in the adapter's dtype, added in ``x``'s."""
        down = cast(nn.Linear, self.repadapter_down[name])
        up = cast(GroupedLinear, self.repadapter_up[name])
        dropout = self.repadapter_dropout[name]
        h = x.to(down.weight.dtype)
        if self.channels_first:
            hidden = nn.functional.conv2d(h, down.weight[..., None, None], down.bias)
            delta = up.conv(dropout(hidden))
        else:
            delta = up(dropout(down(h)))
        return x + (self.repadapter_scale[name] * delta).to(x.dtype)

    def _transform(self, x: torch.Tensor, adapter_names: list[str] | None) -> torch.Tensor:
        if adapter_names is None:
            # The last active adapter is nearest the input, so that merging them one at a time
            # (each fold goes in front of what is already merged) equals merging them together.
            for name in reversed(self.active_adapters):
                if name in self.repadapter_down and name not in self.merged_adapters:
                    x = self._adapt(name, x)
            return x
        batch_dim = 1 if isinstance(self.base_layer, nn.MultiheadAttention) and not self.batch_first else 0
        if x.dim() <= batch_dim or x.shape[batch_dim] != len(adapter_names):
            raise RepAdapterError(  # the wording of PEFT's own check, which its tests match
                "Length of `adapter_names` should be the same as the number of inputs, but got "
                f"{len(adapter_names)} and {x.shape[batch_dim] if x.dim() > batch_dim else 0} respectively "
                f"(at {type(self.base_layer).__name__}); pass one adapter name or '__base__' per sample"
            )
        rows = x.movedim(batch_dim, 0)
        out = rows.clone()
        for name in dict.fromkeys(adapter_names):
            if name == BASE or name not in self.repadapter_down:
                continue
            index = torch.tensor([i for i, n in enumerate(adapter_names) if n == name], device=x.device)
            out[index] = self._adapt(name, rows[index])
        return out.movedim(0, batch_dim)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        adapter_names = kwargs.pop("adapter_names", None)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(*args, **kwargs)
        if adapter_names is not None and self.merged:
            raise RepAdapterError(
                "Cannot pass `adapter_names` when there are merged adapters, please call "
                "`unmerge_adapter` first. (Mixed-adapter batches run unmerged adapters.)"
            )
        transform = partial(
            self._transform, adapter_names=None if adapter_names is None else list(adapter_names)
        )
        if isinstance(self.base_layer, nn.MultiheadAttention):
            args, kwargs = _map_attention_inputs(transform, args, kwargs)
        elif args:
            args = (transform(args[0]), *args[1:])
        else:
            first = next(iter(kwargs), None)
            if first is None or not isinstance(kwargs[first], torch.Tensor):
                raise RepAdapterError(f"{type(self.base_layer).__name__} was called without an input tensor")
            kwargs[first] = transform(kwargs[first])
        return self.base_layer(*args, **kwargs)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Fold the adapters into the consumers (float64, cast once), in order."""
        consumers = self._consumers()
        for name in check_adapters_to_merge(self, adapter_names):
            if name not in self.repadapter_down:
                continue
            affine = self.affine(name)
            if safe_merge:
                affine.check_invertible(name)
            before = [{k: v.detach().clone() for k, v in layer.state_dict().items()} for layer in consumers]
            fold_into(consumers, None, affine, name)
            if safe_merge and not all(torch.isfinite(p).all() for c in consumers for p in c.parameters()):
                for layer, state in zip(consumers, before, strict=True):
                    layer.load_state_dict(state)
                raise RepAdapterError(f"merging adapter {name!r} gives non-finite weights; it was not merged")
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Exact inverse of `merge`."""
        consumers = self._consumers()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            unfold_from(consumers, None, self.affine(name), name)


def _padded(conv: nn.Conv2d) -> bool:
    if isinstance(conv.padding, str):
        return conv.padding != "valid" and any(k != 1 for k in conv.kernel_size)
    return any(conv.padding)


def _in_features(layer: nn.Module) -> int:
    return layer.in_channels if isinstance(layer, nn.Conv2d) else cast(nn.Linear, layer).in_features


def _out_features(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else cast(nn.Linear, layer).out_features


def _check_consumer(layer: nn.Module, where: str, allow_other: bool) -> None:
    """Refuse layers an input adapter cannot fold into (and Linear subclasses that are never called)."""
    kinds = (nn.Linear, nn.Conv2d, nn.MultiheadAttention) if allow_other else (nn.Linear,)
    if type(layer) not in kinds:
        raise RepAdapterError(
            f"RepAdapter under PEFT targets nn.Linear, nn.Conv2d (groups=1) and nn.MultiheadAttention "
            f"layers, or the parent of layers that share an input; {where} is a {type(layer).__name__}. "
            "Name the layers that read the input you want adapted in target_modules"
        )
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise RepAdapterError(f"{where} is a grouped convolution; an adapter before it cannot fold into it")
    if isinstance(layer, nn.MultiheadAttention) and layer.in_proj_weight is None:
        raise RepAdapterError(
            f"{where} has separate q/k/v input projections (kdim/vdim differ from embed_dim); "
            "RepAdapter folds into a fused in_proj_weight only"
        )


def _map_attention_inputs(
    transform: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Adapt query, key and value of an ``nn.MultiheadAttention`` call (once when they are one tensor)."""
    values = list(args[:3])
    names = ("query", "key", "value")[len(values) :]
    values += [kwargs.pop(name) for name in names if name in kwargs]
    done: dict[int, torch.Tensor] = {}
    adapted = []
    for value in values:
        if id(value) not in done:
            done[id(value)] = transform(value)
        adapted.append(done[id(value)])
    return (*adapted, *args[3:]), kwargs


@dataclass(frozen=True)
class _Sites:
    """The core API's sites of a supported model: the default targets, and which inputs are shared."""

    defaults: list[str]
    shared: dict[str, tuple[str, ...]]  # host path -> its consumers (two or more)
    consumer_host: dict[str, str]  # path of a consumer of a shared input -> host path


def _sites_of(model: nn.Module) -> _Sites | None:
    try:
        sites = family_of(model).sites(model, "block")
    except RepAdapterError:
        return None
    plain = all(
        not (s.output or s.channels_first or s.batch_norms or s.not_foldable)
        and all(type(model.get_submodule(f"{s.host}.{c}")) is nn.Linear for c in s.consumers)
        for s in sites
    )
    if not sites or not plain:
        return None
    defaults = [s.host if len(s.consumers) > 1 else f"{s.host}.{s.consumers[0]}" for s in sites]
    shared = {s.host: s.consumers for s in sites if len(s.consumers) > 1}
    consumer_host = {f"{host}.{c}": host for host, consumers in shared.items() for c in consumers}
    return _Sites(defaults, shared, consumer_host)


def _in_layers(paths: list[str], config: RepAdapterPeftConfig) -> list[str]:
    """``paths`` in the layers ``config.layers_to_transform`` selects (PEFT skips that check for
    targets named in full, so default targets are filtered here)."""
    wanted = config.layers_to_transform
    if wanted is None:
        return list(paths)
    wanted = [wanted] if isinstance(wanted, int) else wanted
    patterns = config.layers_pattern or [r"[^.]+"]
    patterns = [patterns] if isinstance(patterns, str) else patterns
    kept = []
    for path in paths:
        for pattern in patterns:
            match = re.search(rf"(?:^|\.){pattern}\.(\d+)\.", path)
            if match:
                if int(match.group(1)) in wanted:
                    kept.append(path)
                break
    if not kept:
        raise RepAdapterError(
            f"layers_to_transform={config.layers_to_transform} (layers_pattern={config.layers_pattern}) "
            f"selects none of the default targets {paths}"
        )
    return kept


def _pass_adapter_names(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], adapter_names: list[str]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    kwargs["adapter_names"] = adapter_names
    return args, kwargs


class RepAdapterPeftModel(BaseTuner):
    """PEFT's model-level injector for RepAdapter."""

    prefix: str = PREFIX
    tuner_layer_cls = RepAdapterLayer
    target_module_mapping: dict[str, list[str]] = {}  # noqa: RUF012 (typed so by BaseTuner); see _sites

    def _sites(self) -> _Sites | None:
        """The core API's sites, read once from the model before any layer is wrapped."""
        if "_repadapter_sites" not in self.__dict__:
            self.__dict__["_repadapter_sites"] = _sites_of(self.model)
        return cast(_Sites | None, self.__dict__["_repadapter_sites"])

    def _prepare_adapter_config(self, peft_config: PeftConfig, model_config: dict[str, Any]) -> PeftConfig:
        if not isinstance(peft_config, RepAdapterPeftConfig):
            raise RepAdapterError(f"expected a RepAdapterPeftConfig, got {type(peft_config).__name__}")
        sites = self._sites()
        if peft_config.target_modules is None:
            if sites is None:
                raise RepAdapterError(
                    f"RepAdapter has no default target_modules for a {type(self.model).__name__}; "
                    "pass target_modules=[...]: the nn.Linear / nn.Conv2d / nn.MultiheadAttention "
                    "layers whose input gets an adapter"
                )
            peft_config.target_modules = _in_layers(sites.defaults, peft_config)
        return peft_config

    def _create_and_replace(
        self,
        peft_config: PeftConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        parameter_name: str | None = None,
    ) -> None:
        if not isinstance(peft_config, RepAdapterPeftConfig):
            raise RepAdapterError(f"expected a RepAdapterPeftConfig, got {type(peft_config).__name__}")
        if isinstance(target, RepAdapterLayer):
            target.update_layer(adapter_name, peft_config)
            return
        sites = self._sites() or _Sites([], {}, {})
        if current_key in sites.consumer_host:
            host = sites.consumer_host[current_key]
            raise RepAdapterError(
                f"{current_key} shares its input with {', '.join(sites.shared[host])} in {host}; "
                f"RepAdapter puts one adapter on that input (as repadapter.inject does): target "
                f"{host.rsplit('.', 1)[-1]!r} instead, or leave target_modules=None for the default"
            )
        layer = RepAdapterLayer(
            target, adapter_name, peft_config, sites.shared.get(current_key, ("",)), current_key
        )
        layer.train(target.training)
        if adapter_name not in self.active_adapters:
            layer.requires_grad_(False)
        self._replace_module(parent, target_name, layer, target)

    @classmethod
    def _remap_adapter_state_dict_for_load(
        cls, model: nn.Module, config: PeftConfig, adapter_name: str, state_dict: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Also read folders of the first plug-in version, whose keys named the adapter
        (``...qkv.repadapter_adapters.<name>.down.weight``), under any adapter name."""
        renamed = {OLD_KEY.sub(r"\1.repadapter_\2.\3", key): value for key, value in state_dict.items()}
        return cast(
            dict[str, torch.Tensor],
            super()._remap_adapter_state_dict_for_load(model, config, adapter_name, renamed),
        )

    def _replace_module(
        self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module
    ) -> None:
        if isinstance(new_module, RepAdapterLayer):
            super()._replace_module(parent, child_name, new_module, child)
        else:  # unloading: the base layer goes back as it is (a host module has no .weight to copy)
            setattr(parent, child_name, new_module)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        """``adapter_names=[...]``: each sample through its named adapter, ``"__base__"`` through none."""
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            yield
            return
        if self.training:
            raise RepAdapterError(
                "Cannot pass `adapter_names` when the model is in training mode. Call .eval() first: "
                "mixed-adapter batches are for inference."
            )
        layers = [m for m in self.model.modules() if isinstance(m, RepAdapterLayer)]
        known = {name for layer in layers for name in layer.repadapter_down}
        unknown = sorted({n for n in adapter_names if n != BASE} - known)
        if unknown:
            raise RepAdapterError(
                f"Trying to infer with non-existing adapter(s): {', '.join(unknown)} "
                f"(this model has {', '.join(sorted(known))})"
            )
        hook = partial(_pass_adapter_names, adapter_names=list(adapter_names))
        handles = [
            module.register_forward_pre_hook(hook, with_kwargs=True)
            for module in self.model.modules()
            if isinstance(module, RepAdapterLayer | AuxiliaryTrainingWrapper)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def register() -> None:
    """Make RepAdapter a PEFT method; importing this module does it, once."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    if _add_peft_type() not in PEFT_TYPE_TO_TUNER_MAPPING:
        register_peft_method(
            name=NAME, config_cls=RepAdapterPeftConfig, model_cls=RepAdapterPeftModel, prefix=PREFIX
        )


register()
