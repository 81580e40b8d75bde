"""Non-linear bottleneck adapters, the baselines RepAdapter is measured against, ``--dim`` wide.

- ``adapter`` (Houlsby-style, sequential): after the attention's output projection and after the
  MLP's second layer, ``h + up(GELU(down(h)))``.
- ``adaptformer``: beside each MLP, on the MLP's (normalised) input,
  ``mlp(x) + 0.1 * up(ReLU(down(x)))``.

Both start as the base model (``up`` is zero). The activation is what stops them folding into the
backbone: they keep their modules, and their latency, at inference.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from repadapter.training.config import TrainConfig
from repadapter.training.methods.base import Method, layers_named, train_only, wrap

ADAPTFORMER_SCALE = 0.1


class Bottleneck(nn.Module):
    """``up(act(down(dropout(x))))`` through ``hidden`` channels, with ``up`` zero-initialised."""

    def __init__(self, width: int, hidden: int, act: type[nn.Module], dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Linear(width, hidden)
        self.act = act()
        self.up = nn.Linear(hidden, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(self.dropout(x))))


class SequentialAdapter(nn.Module):
    """A layer followed by a residual bottleneck on its output."""

    def __init__(self, base: nn.Linear, hidden: int, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.adapter = Bottleneck(base.out_features, hidden, nn.GELU, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base(x)
        return h + self.adapter(h)


class ParallelAdapter(nn.Module):
    """An MLP with a scaled bottleneck beside it, reading the same input."""

    def __init__(self, base: nn.Module, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.adapter = Bottleneck(width, hidden, nn.ReLU, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + ADAPTFORMER_SCALE * self.adapter(x)


def _houlsby(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    targets = layers_named(model, ("attn.proj", "mlp.fc2"), nn.Linear, "adapter")
    wrap(model, targets, lambda layer: SequentialAdapter(layer, cfg.dim, cfg.dropout))
    return train_only(model, lambda name: ".adapter." in name)


def _adaptformer(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    fc1 = layers_named(model, ("mlp.fc1",), nn.Linear, "adaptformer")
    mlps = [name.removesuffix(".fc1") for name in fc1]
    wrap(
        model,
        mlps,
        lambda mlp: ParallelAdapter(
            mlp, cast(nn.Linear, mlp.get_submodule("fc1")).in_features, cfg.dim, cfg.dropout
        ),
    )
    return train_only(model, lambda name: ".adapter." in name)


ADAPTER = Method("adapter", "Houlsby adapter: sequential GELU bottlenecks", _houlsby, False, None)
ADAPTFORMER = Method("adaptformer", "AdaptFormer: ReLU bottleneck beside each MLP", _adaptformer, False, None)
