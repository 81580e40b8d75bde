"""What a model holds: whether it has adapters, their config, parameter counts; and random
non-zero adapters for checking merges."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from repadapter.config import RepAdapterConfig
from repadapter.errors import RepAdapterError
from repadapter.tuner.hosts import ADAPTER_ATTR, CONFIG_KEY, MERGED_KEY, adapted_hosts


def has_adapters(model: nn.Module) -> bool:
    """Whether ``model`` holds injected (not merged) RepAdapters."""
    return bool(adapted_hosts(model))


def injected_submodules(model: nn.Module) -> list[str]:
    """The names of the submodules that were injected (``inject(clip.visual)``), where ``model``
    itself was not."""
    if CONFIG_KEY in model.__dict__:
        return []
    return [name for name, m in model.named_modules() if CONFIG_KEY in m.__dict__]


def adapter_config(model: nn.Module) -> RepAdapterConfig:
    """The config ``model`` was injected with; an error if it has no adapters."""
    if not adapted_hosts(model) or CONFIG_KEY not in model.__dict__:
        if MERGED_KEY in model.__dict__:
            raise RepAdapterError(
                "this model was already merged (its adapters are folded into its weights); "
                "use repadapter.unmerge(model, adapter_file) to get the adapters back"
            )
        parts = injected_submodules(model)
        if parts:
            raise RepAdapterError(
                f"the RepAdapters of this model were injected into its submodule {parts[0]!r}, not into "
                f"the model: call this on model.{parts[0]}, or inject the whole model (a CLIP model "
                "takes its adapters in the image tower and freezes the rest)"
            )
        raise RepAdapterError("this model has no RepAdapters; call repadapter.inject(model, config) first")
    return model.__dict__[CONFIG_KEY]


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
