"""LoRA on the attention's qkv projection: ``W x + s * B A dropout(x)``, rank r = ``--dim``.

``A`` starts Kaiming-uniform and ``B`` at zero, so training starts from the base model; the
update ``s * B A`` folds into ``W`` for deployment (float64, cast once).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from repadapter.layers.fold import add_weight_delta
from repadapter.training.config import TrainConfig
from repadapter.training.methods.base import Method, layers_named, train_only, unwrap, wrap


class LoRALinear(nn.Module):
    """A Linear plus a trainable rank-``rank`` update of its weight."""

    def __init__(self, base: nn.Linear, rank: int, scale: float, dropout: float) -> None:
        super().__init__()
        self.base, self.scale = base, scale
        self.lora_down = nn.Linear(base.in_features, rank, bias=False)
        self.lora_up = nn.Linear(rank, base.out_features, bias=False)
        self.dropout = nn.Dropout(dropout)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * self.lora_up(self.lora_down(self.dropout(x)))

    def merged(self) -> nn.Linear:
        delta = self.scale * self.lora_up.weight.double() @ self.lora_down.weight.double()
        add_weight_delta(self.base, delta)
        return self.base


def _lora(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    targets = layers_named(model, ("attn.qkv",), nn.Linear, "lora")
    wrap(model, targets, lambda layer: LoRALinear(layer, cfg.dim, scale, cfg.dropout))
    return train_only(model, lambda name: ".lora_" in name)


def _merge(model: nn.Module) -> nn.Module:
    return unwrap(model, LoRALinear)


LORA = Method("lora", "LoRA on the qkv projection, rank --dim, scale s", _lora, True, _merge)
