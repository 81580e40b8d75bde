"""Folding math: move an adapter's affine map into the layers around it, and back.

An adapter is ``A(y) = M y + c`` with ``M = I + s * U @ D`` (U: d x r, D: r x d). A linear
consumer ``W x + b`` of ``A(y)`` equals ``(W M) y + (b + W c)``. When the consumer has no bias,
``c`` goes into the bias of the norm that produces ``y`` instead: with ``M delta = c``,
``W M (y + delta) = W M y + W c``. Undoing a merge needs ``M^-1``, which by the Woodbury
identity is ``I - s U K^-1 D`` with the small ``K = I_r + s D U``: an r x r solve, never d x d.
Everything is computed in float64 and cast once, on write-back, to the layer's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from repadapter.errors import RepAdapterError

# Past this condition number of K, undoing a merge of float32 weights loses most of their digits.
MAX_CONDITION = 1e6


@dataclass(frozen=True)
class AffineMap:
    """``y -> (I + scale * up @ down) y + shift`` in float64, kept in low-rank form."""

    up: torch.Tensor  # (d, r)
    down: torch.Tensor  # (r, d)
    scale: float
    shift: torch.Tensor  # (d,)

    @property
    def matrix(self) -> torch.Tensor:
        """The dense d x d matrix ``I + scale * up @ down``."""
        eye = torch.eye(self.up.shape[0], dtype=self.up.dtype, device=self.up.device)
        return eye + self.scale * self.up @ self.down

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.scale * (y @ self.down.T) @ self.up.T + self.shift

    def right_multiply(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight @ M`` for a consumer weight of shape (out, d)."""
        return weight + self.scale * (weight @ self.up) @ self.down

    def check_invertible(self, where: str) -> None:
        """Raise a `RepAdapterError` naming ``where`` unless ``M`` can be inverted accurately."""
        self._small_inverse(where)

    def _small_inverse(self, where: str) -> torch.Tensor:
        r = self.down.shape[0]
        k = torch.eye(r, dtype=self.up.dtype, device=self.up.device)
        k = k + self.scale * self.down @ self.up
        cond = torch.linalg.cond(k).item()
        if not cond < MAX_CONDITION:
            raise RepAdapterError(
                f"the adapter at {where} is (nearly) singular: I + s*down@up has condition "
                f"number {cond:.3g}, so folding its bias or undoing its merge is not exact. "
                "Its weights are degenerate; retrain it or lower its scale."
            )
        return torch.linalg.inv(k)

    def right_solve(self, weight: torch.Tensor, where: str) -> torch.Tensor:
        """``weight @ M^-1``: undoes `right_multiply`."""
        k_inv = self._small_inverse(where)
        return weight - self.scale * ((weight @ self.up) @ k_inv) @ self.down

    def inverse_shift(self, where: str) -> torch.Tensor:
        """``M^-1 @ shift``: the input offset that produces ``shift`` after ``M``."""
        k_inv = self._small_inverse(where)
        return self.shift - self.scale * self.up @ (k_inv @ (self.down @ self.shift))


def _move_sink_bias(bias_sink: nn.Module, affine: AffineMap, where: str, sign: float) -> None:
    """Add (sign=1) or take back (sign=-1) the norm-bias offset ``M^-1 @ shift``."""
    bias = cast(torch.Tensor, bias_sink.bias)
    bias.copy_((bias.double() + sign * affine.inverse_shift(where)).to(bias.dtype))


def fold_into(
    consumers: Sequence[nn.Linear],
    bias_sink: nn.Module | None,
    affine: AffineMap,
    where: str,
) -> None:
    """Fold ``affine`` into the linear layers that read its output, in place.

    The shift goes into ``bias_sink.bias`` (a norm whose output is the adapter's only input)
    when one is given, else into each consumer's bias.
    """
    with torch.no_grad():
        for layer in consumers:
            weight = layer.weight.double()
            if bias_sink is None and affine.shift.any():
                if layer.bias is None:
                    raise RepAdapterError(
                        f"{where}: a consumer has no bias and there is no norm bias to take the "
                        "adapter's shift; this adapter should have been built bias-free"
                    )
                layer.bias.copy_((layer.bias.double() + weight @ affine.shift).to(layer.bias.dtype))
            layer.weight.copy_(affine.right_multiply(weight).to(layer.weight.dtype))
        if bias_sink is not None:
            _move_sink_bias(bias_sink, affine, where, sign=1.0)


def unfold_from(
    consumers: Sequence[nn.Linear],
    bias_sink: nn.Module | None,
    affine: AffineMap,
    where: str,
) -> None:
    """Exact inverse of `fold_into`: restore the base weights the fold started from."""
    with torch.no_grad():
        restored = [affine.right_solve(layer.weight.double(), where) for layer in consumers]
        for layer, weight in zip(consumers, restored, strict=True):
            if bias_sink is None and affine.shift.any():
                layer.bias.copy_((layer.bias.double() - weight @ affine.shift).to(layer.bias.dtype))
            layer.weight.copy_(weight.to(layer.weight.dtype))
        if bias_sink is not None:
            _move_sink_bias(bias_sink, affine, where, sign=-1.0)
