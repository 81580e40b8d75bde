"""RepAdapter as a PEFT method, for people who already work with PEFT.

``import repadapter.peft_plugin`` registers the method, then PEFT's own API works:
``get_peft_model(model, RepAdapterPeftConfig(target_modules=["qkv", "fc1"]))``,
``save_pretrained``, ``PeftModel.from_pretrained`` and ``merge_and_unload()``, with the usual
``adapter_config.json`` + ``adapter_model.safetensors``. Import it before loading a saved
RepAdapter with PEFT. PEFT is an optional dependency; the rest of repadapter never imports it.

Under PEFT, each targeted ``nn.Linear`` gets its own adapter on its input (PEFT wraps layers
one at a time). In a timm ViT, ``qkv`` and ``fc1`` are the only readers of their inputs, so this
is the paper's placement; where several layers share an input (Hugging Face's separate
query/key/value), each gets its own adapter, all foldable. A targeted layer without a bias gets a
bias-free adapter, so merging never adds a parameter.

PEFT 0.21 accepts only methods named in its ``PeftType`` enum, so registering adds
``PeftType.REPADAPTER`` to that enum first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch
from peft import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, check_adapters_to_merge
from peft.utils import PeftType, register_peft_method
from torch import nn

from repadapter.adapter import RepAdapter
from repadapter.config import RepAdapterConfig
from repadapter.errors import RepAdapterError
from repadapter.fold import fold_into, unfold_from

NAME = "repadapter"
PREFIX = "repadapter_"


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
    """PEFT config of RepAdapter: adapters on the inputs of ``target_modules`` (nn.Linear)."""

    dim: int = field(default=8, metadata={"help": "adapter bottleneck width"})
    groups: int = field(default=2, metadata={"help": "groups of the up projection"})
    scale: float = field(default=1.0, metadata={"help": "adapter scale s"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the bottleneck"})
    target_modules: list[str] | str | None = field(
        default_factory=lambda: ["qkv", "fc1"],
        metadata={"help": "Linear layers whose input gets an adapter (names, suffixes or a regex)"},
    )
    exclude_modules: list[str] | str | None = field(default=None, metadata={"help": "layers to leave alone"})
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "other modules to train and save, e.g. ['head']"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = _add_peft_type()
        RepAdapterConfig(dim=self.dim, groups=self.groups, scale=self.scale, dropout=self.dropout)


class RepAdapterLayer(nn.Module, BaseTunerLayer):
    """A linear layer whose input passes through the active RepAdapters first."""

    adapter_layer_names = ("repadapter_adapters",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: RepAdapterPeftConfig) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise RepAdapterError(
                f"RepAdapter under PEFT targets nn.Linear layers; got {type(base_layer).__name__}"
            )
        self.base_layer = base_layer
        self.repadapter_adapters = nn.ModuleDict()
        self._active_adapter = adapter_name
        self.merged_adapters: list[str] = []
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.update_layer(adapter_name, config)

    def _base(self) -> nn.Linear:
        return cast(nn.Linear, self.get_base_layer())

    def _adapter(self, name: str) -> RepAdapter:
        return cast(RepAdapter, self.repadapter_adapters[name])

    def update_layer(self, adapter_name: str, config: RepAdapterPeftConfig) -> None:
        base = self._base()
        adapter = RepAdapter(
            base.in_features,
            config.dim,
            config.groups,
            config.scale,
            config.dropout,
            bias=base.bias is not None,
        )
        self.repadapter_adapters[adapter_name] = adapter.to(
            device=base.weight.device, dtype=base.weight.dtype
        )
        self.set_adapter(self.active_adapters)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters and self.merged:
            self.unmerge()
        if not (self.disable_adapters or self.merged):
            for name in self.active_adapters:
                if name in self.repadapter_adapters:
                    x = self.repadapter_adapters[name](x)
        return self.base_layer(x, *args, **kwargs)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Fold the adapters into the base layer (float64, cast once), last-applied first."""
        base = self._base()
        for name in reversed(check_adapters_to_merge(self, adapter_names)):
            if name not in self.repadapter_adapters:
                continue
            before = (base.weight.detach().clone(), None if base.bias is None else base.bias.detach().clone())
            fold_into([base], None, self._adapter(name).affine(), name)
            if safe_merge and not torch.isfinite(base.weight).all():
                with torch.no_grad():
                    base.weight.copy_(before[0])
                    if before[1] is not None:
                        base.bias.copy_(before[1])
                raise RepAdapterError(f"merging adapter {name!r} gives non-finite weights; it was not merged")
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Exact inverse of `merge`."""
        base = self._base()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            unfold_from([base], None, self._adapter(name).affine(), name)


class RepAdapterPeftModel(BaseTuner):
    """PEFT's model-level injector for RepAdapter."""

    prefix: str = PREFIX
    tuner_layer_cls = RepAdapterLayer
    target_module_mapping: dict[str, list[str]] = {}  # noqa: RUF012 (typed so by BaseTuner); no defaults

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
        layer = RepAdapterLayer(target, adapter_name, peft_config)
        if adapter_name not in self.active_adapters:
            layer.requires_grad_(False)
        self._replace_module(parent, target_name, layer, target)


def register() -> None:
    """Make RepAdapter a PEFT method; importing this module does it, once."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    if _add_peft_type() not in PEFT_TYPE_TO_TUNER_MAPPING:
        register_peft_method(
            name=NAME, config_cls=RepAdapterPeftConfig, model_cls=RepAdapterPeftModel, prefix=PREFIX
        )


register()
