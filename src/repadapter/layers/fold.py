"""Folding math: move an adapter's affine map into the layers around it, and back.

An adapter is ``A(y) = M y + c`` with ``M = I + s * U @ D`` (U: d x r, D: r x d). A linear
consumer ``W x + b`` of ``A(y)`` equals ``(W M) y + (b + W c)``. When the consumer has no bias,
``c`` goes into the bias of the norm that produces ``y`` instead: with ``M delta = c``,
``W M (y + delta) = W M y + W c``. Undoing a merge needs ``M^-1``, which by the Woodbury
identity is ``I - s U K^-1 D`` with the small ``K = I_r + s D U``: an r x r solve, never d x d.
Everything is computed in float64 and cast once, on write-back, to the layer's dtype.

A *consumer* is any layer that mixes input channels linearly (`Projection`): a Linear, a
convolution (``W c`` summed over its taps), or a fused attention in-projection. An adapter on a
*producer*'s output, ``A(W x + b)``, folds the other way: ``(M W) x + (M b + c)``.
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

    def left_multiply(self, weight: torch.Tensor) -> torch.Tensor:
        """``M @ weight`` for a producer weight of shape (d, in)."""
        return weight + self.scale * self.up @ (self.down @ weight)

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

    def left_solve(self, weight: torch.Tensor, where: str) -> torch.Tensor:
        """``M^-1 @ weight``: undoes `left_multiply`."""
        k_inv = self._small_inverse(where)
        return weight - self.scale * self.up @ (k_inv @ (self.down @ weight))

    def inverse_shift(self, where: str) -> torch.Tensor:
        """``M^-1 @ shift``: the input offset that produces ``shift`` after ``M``."""
        return self.left_solve(self.shift[:, None], where)[:, 0]


@dataclass(frozen=True)
class Projection:
    """A layer that mixes its input channels linearly, seen as a weight and a home for ``W c``.

    Attributes:
        weight: shape (out, in, *kernel).
        bias: the tensor that takes ``W c``: the layer's bias or, for a bias-free convolution
            followed by an eval-mode BatchNorm, that norm's ``running_mean`` (``bias_sign=-1``:
            ``BN(z + W c)`` with mean ``mu`` equals ``BN(z)`` with mean ``mu - W c``).
        takes_shift: False when a constant input shift does not give a constant output shift,
            as in a zero-padded k x k convolution, whose border outputs see fewer taps of it.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    bias_sign: float = 1.0
    takes_shift: bool = True

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def input_matrix(self) -> torch.Tensor:
        """The weight in float64 as (out * taps, in): one row per output channel and kernel tap."""
        return self.weight.double().movedim(1, -1).reshape(-1, self.in_features)

    def write_input_matrix(self, matrix: torch.Tensor) -> None:
        shape = self.weight.movedim(1, -1).shape
        self.weight.copy_(matrix.reshape(shape).movedim(-1, 1).to(self.weight.dtype))

    def response(self, matrix: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``W c`` of an input-matrix ``W``, summed over kernel taps: shape (out,)."""
        return (matrix @ shift).reshape(self.out_features, -1).sum(-1)

    def add_to_bias(self, delta: torch.Tensor) -> None:
        bias = cast(torch.Tensor, self.bias)
        bias.copy_((bias.double() + self.bias_sign * delta).to(bias.dtype))


def _padding_free(conv: nn.Conv2d) -> bool:
    if isinstance(conv.padding, str):
        return conv.padding == "valid" or all(k == 1 for k in conv.kernel_size)
    return not any(conv.padding)


def projection(
    layer: nn.Module, batch_norm: nn.Module | None = None, kind: type[nn.Module] | None = None
) -> Projection:
    """``layer`` as a `Projection`, or an error saying why an adapter cannot fold into it.

    ``batch_norm`` is the BatchNorm that reads ``layer``'s output and nothing else, if any: a
    bias-free convolution hands ``W c`` to its running mean (exact in eval mode). ``kind`` is
    the layer's class when ``type(layer)`` is a subclass standing in for it. Subclasses are
    refused otherwise: MultiheadAttention's ``out_proj``, say, is a Linear it never calls.
    """
    kind = kind or type(layer)
    if kind is nn.Linear:
        linear = cast(nn.Linear, layer)
        return Projection(linear.weight, linear.bias)
    if kind is nn.MultiheadAttention and cast(nn.MultiheadAttention, layer).in_proj_weight is not None:
        attn = cast(nn.MultiheadAttention, layer)
        return Projection(attn.in_proj_weight, attn.in_proj_bias)
    if kind is nn.Conv2d:
        layer = cast(nn.Conv2d, layer)
        if layer.groups != 1:
            raise RepAdapterError(
                f"{layer} is a grouped or depthwise convolution: a dense adapter before it would make "
                "its kernel dense, so it cannot fold into this architecture. Put adapters before "
                "pointwise (groups=1) convolutions or Linear layers instead"
            )
        bias: torch.Tensor | None = layer.bias
        sign = 1.0
        if bias is None and batch_norm is not None:
            if not isinstance(batch_norm, nn.BatchNorm2d) or batch_norm.running_mean is None:
                raise RepAdapterError(f"{batch_norm} after {layer} is not a BatchNorm2d with running stats")
            bias, sign = cast(torch.Tensor, batch_norm.running_mean), -1.0
        return Projection(layer.weight, bias, sign, takes_shift=_padding_free(layer))
    raise RepAdapterError(
        f"an adapter cannot fold into a {type(layer).__qualname__}; it folds into nn.Linear, "
        "nn.Conv2d with groups=1 (no dynamic padding) and nn.MultiheadAttention with a fused in_proj"
    )


def _projections(layers: Sequence[nn.Module | Projection]) -> list[Projection]:
    return [layer if isinstance(layer, Projection) else projection(layer) for layer in layers]


def _move_sink_bias(bias_sink: nn.Module, affine: AffineMap, where: str, sign: float) -> None:
    """Add (sign=1) or take back (sign=-1) the norm-bias offset ``M^-1 @ shift``."""
    bias = cast(torch.Tensor, bias_sink.bias)
    bias.copy_((bias.double() + sign * affine.inverse_shift(where)).to(bias.dtype))


def fold_into(
    consumers: Sequence[nn.Module | Projection],
    bias_sink: nn.Module | None,
    affine: AffineMap,
    where: str,
) -> None:
    """Fold ``affine`` into the linear layers that read its output, in place.

    The shift goes into ``bias_sink.bias`` (a norm whose output is the adapter's only input)
    when one is given, else into each consumer's bias.
    """
    with torch.no_grad():
        for layer in _projections(consumers):
            weight = layer.input_matrix()
            if bias_sink is None and affine.shift.any():
                if layer.bias is None or not layer.takes_shift:
                    raise RepAdapterError(
                        f"{where}: a consumer cannot take the adapter's shift (no bias, or zero "
                        "padding) and there is no norm bias; this adapter should have been built bias-free"
                    )
                layer.add_to_bias(layer.response(weight, affine.shift))
            layer.write_input_matrix(affine.right_multiply(weight))
        if bias_sink is not None:
            _move_sink_bias(bias_sink, affine, where, sign=1.0)


def unfold_from(
    consumers: Sequence[nn.Module | Projection],
    bias_sink: nn.Module | None,
    affine: AffineMap,
    where: str,
) -> None:
    """Exact inverse of `fold_into`: restore the base weights the fold started from."""
    with torch.no_grad():
        layers = _projections(consumers)
        restored = [affine.right_solve(layer.input_matrix(), where) for layer in layers]
        for layer, weight in zip(layers, restored, strict=True):
            if bias_sink is None and affine.shift.any():
                layer.add_to_bias(-layer.response(weight, affine.shift))
            layer.write_input_matrix(weight)
        if bias_sink is not None:
            _move_sink_bias(bias_sink, affine, where, sign=-1.0)


def fold_into_producer(producer: nn.Module | Projection, affine: AffineMap, where: str) -> None:
    """Fold ``affine`` applied to ``producer``'s output into it: ``W <- M W``, ``b <- M b + c``."""
    (layer,) = _projections([producer])
    with torch.no_grad():
        weight = layer.weight.double().reshape(layer.out_features, -1)
        if layer.bias is None:
            if affine.shift.any():
                raise RepAdapterError(f"{where}: the layer has no bias to take the adapter's shift")
        else:
            layer.bias.copy_(affine(layer.bias.double()).to(layer.bias.dtype))
        layer.weight.copy_(affine.left_multiply(weight).reshape(layer.weight.shape).to(layer.weight.dtype))


def unfold_from_producer(producer: nn.Module | Projection, affine: AffineMap, where: str) -> None:
    """Exact inverse of `fold_into_producer`."""
    (layer,) = _projections([producer])
    with torch.no_grad():
        weight = affine.left_solve(layer.weight.double().reshape(layer.out_features, -1), where)
        if layer.bias is not None:
            bias = affine.left_solve((layer.bias.double() - affine.shift)[:, None], where)[:, 0]
            layer.bias.copy_(bias.to(layer.bias.dtype))
        layer.weight.copy_(weight.reshape(layer.weight.shape).to(layer.weight.dtype))


# --- folds of the baseline methods (methods/): weight deltas and output scale-shifts ----------


def add_weight_delta(layer: nn.Linear, delta: torch.Tensor) -> None:
    """``W <- W + delta`` for a float64 ``delta`` (LoRA, FacT), cast once on write-back."""
    if delta.shape != layer.weight.shape:
        raise RepAdapterError(
            f"a {tuple(delta.shape)} update does not fit a {tuple(layer.weight.shape)} weight"
        )
    with torch.no_grad():
        layer.weight.copy_((layer.weight.double() + delta).to(layer.weight.dtype))


def fold_output_scale_shift(
    layer: nn.Linear | nn.LayerNorm, scale: torch.Tensor, shift: torch.Tensor
) -> None:
    """Fold ``y -> y * scale + shift`` on a Linear's or LayerNorm's output channels into its
    weight and bias (SSF): each output row (a LayerNorm's gain) scales, the bias scales and shifts."""
    if layer.weight is None or layer.bias is None:
        raise RepAdapterError(
            f"cannot fold a scale-shift into a {type(layer).__name__} without weight and bias "
            "(build it with bias=True / elementwise_affine=True)"
        )
    scale, shift = scale.double(), shift.double()
    with torch.no_grad():
        weight = layer.weight.double() * (scale[:, None] if layer.weight.ndim == 2 else scale)
        layer.weight.copy_(weight.to(layer.weight.dtype))
        layer.bias.copy_((layer.bias.double() * scale + shift).to(layer.bias.dtype))
