"""RepAdapter as a method: `repadapter.tuner.inject.inject` with the run's adapter settings."""

from __future__ import annotations

from torch import nn

from repadapter.config import RepAdapterConfig
from repadapter.training.config import TrainConfig
from repadapter.training.methods.base import Method
from repadapter.tuner.inject import inject
from repadapter.tuner.merge import merge


def _repadapter(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    adapter = RepAdapterConfig(
        dim=cfg.dim, groups=cfg.groups, scale=scale, dropout=cfg.dropout, placement=cfg.placement
    )
    return inject(model, adapter)


def _merge(model: nn.Module) -> nn.Module:
    return merge(model, inplace=True)


REPADAPTER = Method("repadapter", "RepAdapter (placement from --placement)", _repadapter, True, _merge)
