"""Training methods under one interface, chosen with ``--method``.

A method takes the freshly built base model and returns it ready to train: what it adds and
which parameters it leaves trainable. ``scaled`` methods search the adapter scale ``s``;
``mergeable`` ones deploy as the vanilla architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from repadapter.config import RepAdapterConfig
from repadapter.engine.recipe import TrainConfig
from repadapter.errors import RepAdapterError
from repadapter.families.base import timm_classifier_prefixes
from repadapter.model import inject


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    prepare: Callable[[nn.Module, TrainConfig, float], nn.Module]
    scaled: bool
    mergeable: bool


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """The classifier's module names, as timm records them (``pretrained_cfg['classifier']``)."""
    if (getattr(model, "pretrained_cfg", None) or {}).get("classifier") is None:
        raise RepAdapterError(
            f"cannot tell the classifier of a {type(model).__name__}: it has no timm pretrained_cfg"
        )
    return timm_classifier_prefixes(model)


def _repadapter(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    adapter = RepAdapterConfig(
        dim=cfg.dim, groups=cfg.groups, scale=scale, dropout=cfg.dropout, placement=cfg.placement
    )
    return inject(model, adapter)


def _linear_probe(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    heads = classifier_names(model)
    for name, param in model.named_parameters():
        param.requires_grad_(any(name == h or name.startswith(h + ".") for h in heads))
    return model


def _full(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    return model.requires_grad_(True)


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "repadapter", "RepAdapter (placement from --placement)", _repadapter, scaled=True, mergeable=True
        ),
        Method(
            "linear", "linear probing: the classifier head only", _linear_probe, scaled=False, mergeable=True
        ),
        Method("full", "full fine-tuning: every parameter", _full, scaled=False, mergeable=True),
    ]
}


def method(name: str) -> Method:
    if name not in METHODS:
        raise RepAdapterError(f"unknown method {name!r}; methods: {', '.join(METHODS)}")
    return METHODS[name]
