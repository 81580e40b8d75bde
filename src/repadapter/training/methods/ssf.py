"""SSF: a learned per-channel scale and shift after every Linear of each block's attention and MLP
(where the model's family puts adapters) and after every LayerNorm outside the classifier
(channels-last ones only): ``y * gamma + beta``, with gamma ~ N(1, 0.02) and beta ~ N(0, 0.02)
as in the paper.

Each scale-shift is affine on its layer's output channels, so it folds into that layer.
"""

from __future__ import annotations

import torch
from timm.layers import LayerNorm2d
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.layers.fold import fold_output_scale_shift
from repadapter.training.config import TrainConfig
from repadapter.training.methods.base import (
    Method,
    block_parts,
    classifier_names,
    is_under,
    train_only,
    unwrap,
    wrap,
)


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
    # The Linear layers of each block's attention and MLP (where the family puts adapters), and
    # every LayerNorm outside the classifier with channels-last output (a LayerNorm2d, as in
    # ConvNeXt's stem and head, normalises dim 1 of NCHW maps).
    parts = block_parts(model)
    hosts, heads = (*parts["attn"], *parts["mlp"]), classifier_names(model)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and is_under(n, hosts)]
    if not linears:
        raise RepAdapterError(
            f"--method ssf scales and shifts the Linear layers of attention and MLP blocks (timm ViT, "
            f"DeiT, Swin and ConvNeXt blocks); a {type(model).__name__} has none: use --method "
            "repadapter, linear or full"
        )
    norms = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.LayerNorm)
        and not isinstance(module, LayerNorm2d)
        and not is_under(name, heads)
    ]
    wrap(model, linears + norms, ScaleShift)
    return train_only(model, lambda name: ".ssf_" in name)


def _merge(model: nn.Module) -> nn.Module:
    return unwrap(model, ScaleShift)


SSF = Method("ssf", "SSF: scale and shift after each norm and linear layer", _ssf, False, _merge)
