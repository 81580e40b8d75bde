"""What every training method shares: its description, and how it finds and wraps layers.

A method takes the freshly built base model and returns it ready to train: what it adds and which
parameters it leaves trainable (always the classifier head too). ``scaled`` methods search a
scale ``s``; a method with a ``merge`` deploys as the vanilla architecture, the others keep
their added modules (and their cost) at inference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families import find_family
from repadapter.families.base import head_of
from repadapter.training.config import TrainConfig


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    prepare: Callable[[nn.Module, TrainConfig, float], nn.Module]
    scaled: bool
    merge: Callable[[nn.Module], nn.Module] | None  # folds in place; `deploy` copies first

    @property
    def mergeable(self) -> bool:
        return self.merge is not None


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """The classifier's module names (`repadapter.families.head_of`); an error when it has none."""
    heads = head_of(model)
    if not heads:
        raise RepAdapterError(
            f"cannot tell the classifier of a {type(model).__name__}: its family names no head and it "
            "has no timm pretrained_cfg"
        )
    return heads


def is_under(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether module or parameter ``name`` is one of ``prefixes`` or inside one."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def train_only(model: nn.Module, trains: Callable[[str], bool]) -> nn.Module:
    """Freeze every parameter except the classifier's and those whose name ``trains`` accepts."""
    heads = classifier_names(model)
    for name, param in model.named_parameters():
        param.requires_grad_(is_under(name, heads) or trains(name))
    return model


def block_parts(model: nn.Module) -> dict[str, list[str]]:
    """Where the model's family puts adapters, as the baselines name them: ``"attn"``, the
    attention modules (the hosts of placement "attn"), and ``"mlp"``, the block's other hosts of
    placement "block" (the MLPs). Empty lists for a model without those placements."""
    family = find_family(model)

    def hosts(placement: str) -> list[str]:
        if family is None or placement not in family.placements:
            return []
        try:
            return [site.host for site in family.sites(model, placement)]
        except RepAdapterError:  # e.g. a Segmenter whose backbone's family has no such placement
            return []

    attention = hosts("attn")
    return {"attn": attention, "mlp": [host for host in hosts("block") if host not in attention]}


def layers_named(
    model: nn.Module, suffixes: tuple[str, ...], kind: type[nn.Module], method: str
) -> list[str]:
    """Names of the ``kind`` modules ``suffixes`` name in each block, in module order:
    ``"attn.qkv"`` is the ``qkv`` layer of each attention module, ``"mlp.fc2"`` the ``fc2`` of
    each MLP (see `block_parts`); an error naming the method when there are none."""
    parts = block_parts(model)
    wanted = set()
    for suffix in suffixes:
        part, _, layer = suffix.partition(".")
        wanted |= {f"{host}.{layer}" for host in parts[part]}
    found = [name for name, module in model.named_modules() if name in wanted and isinstance(module, kind)]
    if not found:
        raise RepAdapterError(
            f"--method {method} wraps {kind.__name__} layers named {', '.join(suffixes)} (timm ViT, DeiT "
            f"and Swin blocks); a {type(model).__name__} has none: use --method repadapter, linear or full"
        )
    return found


def wrap(model: nn.Module, names: list[str], wrapper: Callable[[Any], nn.Module]) -> None:
    """Replace each named module by ``wrapper(module)`` (``layers_named`` checked its type)."""
    for name in names:
        model.set_submodule(name, wrapper(model.get_submodule(name)))


def unwrap(model: nn.Module, kind: type[nn.Module]) -> nn.Module:
    """Replace every ``kind`` wrapper by ``wrapper.merged()``, its base layer with the update
    folded in; returns ``model``."""
    for name in [n for n, m in model.named_modules() if isinstance(m, kind)]:
        model.set_submodule(name, model.get_submodule(name).merged())  # type: ignore[operator]
    return model


def perturb_trained(model: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Add N(0, std^2) noise to every trainable tensor, standing in for training when checking
    merges and timing deploy forms."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(
                    (torch.randn(param.shape, generator=generator, dtype=torch.float64) * std).to(param.dtype)
                )
    return model
