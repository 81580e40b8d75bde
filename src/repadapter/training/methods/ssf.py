"""SSF: a learned per-channel scale and shift after every LayerNorm and Linear of each block
(and the final norm; channels-last layers only): ``y * gamma + beta``, with gamma ~ N(1, 0.02)
and beta ~ N(0, 0.02) as in the paper.

Each scale-shift is affine on its layer's output channels, so it folds into that layer.
"""

from __future__ import annotations

import torch
from timm.layers import LayerNorm2d
from torch import nn

from repadapter.layers.fold import fold_output_scale_shift
from repadapter.training.config import TrainConfig
from repadapter.training.methods.base import Method, layers_named, train_only, unwrap, wrap

_TARGETS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2", "norm")


class ScaleShift(nn.Module):
    """A Linear or LayerNorm followed by a trainable per-channel scale and shift."""

    def __init__(self, base: nn.Linear | nn.LayerNorm) -> None:
        super().__init__()
        self.base = base
        channels = base.out_features if isinstance(base, nn.Linear) else base.normalized_shape[-1]
        self.ssf_scale = nn.Parameter(torch.empty(channels).normal_(1.0, 0.02))
        self.ssf_shift = nn.Parameter(torch.empty(channels).normal_(0.0, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * self.ssf_scale + self.ssf_shift

    def merged(self) -> nn.Module:
        fold_output_scale_shift(self.base, self.ssf_scale.detach(), self.ssf_shift.detach())
        return self.base


def _ssf(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    # Channels-last outputs only: a LayerNorm2d (ConvNeXt's head) normalises dim 1 of NCHW maps.
    norms = [
        name
        for name in layers_named(model, _TARGETS, nn.LayerNorm, "ssf")
        if not isinstance(model.get_submodule(name), LayerNorm2d)
    ]
    targets = layers_named(model, _TARGETS, nn.Linear, "ssf") + norms
    wrap(model, targets, ScaleShift)
    return train_only(model, lambda name: ".ssf_" in name)


def _merge(model: nn.Module) -> nn.Module:
    return unwrap(model, ScaleShift)


SSF = Method("ssf", "SSF: scale and shift after each norm and linear layer", _ssf, False, _merge)
