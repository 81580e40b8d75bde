"""FacT-TT: every block's attention and MLP weights updated through factors shared by the model.

The ViT's weights, cut into width x width slices (qkv: 3, proj: 1, fc1 and fc2: 4 each), form
one tensor whose update is tensor-train factorised: slice (i, j) of a layer gets
``dW_ij = s * V C_ij U^T``, with ``U``, ``V`` (width x r) shared across the model and an r x r
core ``C_ij`` per slice of every layer, r = ``--dim``. ``V`` starts at
zero (the update is zero) and the cores at the identity (so ``V`` gets a gradient). The update is
linear in the input, so it folds into each weight for deployment (float64, cast once).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.layers.fold import add_weight_delta
from repadapter.training.config import TrainConfig
from repadapter.training.methods.base import Method, layers_named, train_only, unwrap, wrap

_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


class FacTFactors(nn.Module):
    """The factors every FacT layer of a model shares."""

    def __init__(self, width: int, rank: int) -> None:
        super().__init__()
        self.u = nn.Parameter(nn.init.xavier_uniform_(torch.empty(width, rank)))
        self.v = nn.Parameter(torch.zeros(width, rank))


class FacTLinear(nn.Module):
    """A Linear of (out, in) = (a w, b w) plus ``s * V C_ij U^T`` on each w x w slice (i, j)."""

    factors: FacTFactors  # shared: set outside the module tree, so it is registered once

    def __init__(self, base: nn.Linear, factors: FacTFactors, scale: float, dropout: float) -> None:
        super().__init__()
        width, rank = factors.u.shape
        if base.out_features % width or base.in_features % width:
            raise RepAdapterError(f"FacT needs layer sizes that are multiples of the width {width}")
        self.base, self.scale, self.width = base, scale, width
        self.blocks = (base.out_features // width, base.in_features // width)
        self.cores = nn.Parameter(torch.eye(rank).repeat(*self.blocks, 1, 1))
        self.dropout = nn.Dropout(dropout)
        object.__setattr__(self, "factors", factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factors = self.factors
        slices = self.dropout(x).unflatten(-1, (self.blocks[1], self.width))  # (..., b, w)
        low = torch.einsum("...jw,wr,ijsr->...is", slices, factors.u, self.cores)
        update = torch.einsum("...is,ws->...iw", low, factors.v).flatten(-2)
        return self.base(x) + self.scale * update

    def merged(self) -> nn.Linear:
        factors = self.factors
        u, v, cores = factors.u.double(), factors.v.double(), self.cores.double()
        delta = self.scale * torch.einsum("ps,ijsr,qr->ipjq", v, cores, u)
        add_weight_delta(self.base, delta.reshape(self.base.weight.shape))
        return self.base


def _fact_tt(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    targets = layers_named(model, _TARGETS, nn.Linear, "fact-tt")
    widths = {
        cast(nn.Linear, model.get_submodule(name)).in_features for name in targets if name.endswith("qkv")
    }
    if not widths:
        raise RepAdapterError(
            f"--method fact-tt factorises the attention and MLP weights of transformer blocks; a "
            f"{type(model).__name__} has no attn.qkv: use --method repadapter, ssf or full"
        )
    if len(widths) != 1:
        raise RepAdapterError(
            f"--method fact-tt shares its factors across blocks of one width; this model has {sorted(widths)}"
        )
    factors = FacTFactors(widths.pop(), cfg.dim)
    model.fact_tt = factors
    wrap(model, targets, lambda layer: FacTLinear(layer, factors, scale, cfg.dropout))
    return train_only(model, lambda name: name.startswith("fact_tt.") or name.endswith(".cores"))


def _merge(model: nn.Module) -> nn.Module:
    unwrap(model, FacTLinear)
    del model.fact_tt
    return model


FACT_TT = Method(
    "fact-tt", "FacT-TT: tensor-train factorised weight updates, rank --dim", _fact_tt, True, _merge
)
