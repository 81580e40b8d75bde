"""Methods that add no module: linear probing, full fine-tuning, BitFit (biases only).

Their trained model is already the vanilla architecture, so deploying it changes nothing.
"""

from __future__ import annotations

from torch import nn

from repadapter.training.config import TrainConfig
from repadapter.training.methods.base import Method, train_only


def _linear_probe(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    return train_only(model, lambda name: False)


def _full(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    return model.requires_grad_(True)


def _bitfit(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    return train_only(model, lambda name: name.endswith(".bias"))


def _as_trained(model: nn.Module) -> nn.Module:
    return model


LINEAR = Method("linear", "linear probing: the classifier head only", _linear_probe, False, _as_trained)
FULL = Method("full", "full fine-tuning: every parameter", _full, False, _as_trained)
BITFIT = Method("bitfit", "BitFit: every bias, and the head", _bitfit, False, _as_trained)
