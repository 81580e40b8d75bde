"""The RepAdapter module: a linear bottleneck with an identity residual, and nothing else.

``A(x) = x + s * (up(dropout(down(x))))``: ``down`` is dense (d -> r), ``up`` is grouped
(r -> d, block-diagonal). There is no activation, so in eval mode ``A`` is affine and folds
into the linear layer that reads it (see `repadapter.layers.fold`). On channels-first feature maps
(CNNs) the same weights run as 1x1 convolutions, the up projection as a grouped one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.layers.fold import AffineMap


class GroupedLinear(nn.Module):
    """Block-diagonal linear map: output group k reads only input group k.

    The same map as a grouped 1x1 convolution, on channels-last input. Starts at zero.
    """

    def __init__(self, in_features: int, out_features: int, groups: int, bias: bool = True) -> None:
        super().__init__()
        for name, size in (("in_features", in_features), ("out_features", out_features)):
            if size % groups:
                raise RepAdapterError(f"{name}={size} is not divisible by groups={groups}")
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        self.weight = nn.Parameter(torch.zeros(groups, out_features // groups, in_features // groups))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unflatten(-1, (self.groups, self.in_features // self.groups))
        y = torch.einsum("...gi,goi->...go", x, self.weight).flatten(-2)
        return y if self.bias is None else y + self.bias

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """The same map as a grouped 1x1 convolution over channels-first ``x`` (N, C, H, W)."""
        return nn.functional.conv2d(
            x, self.weight.flatten(0, 1)[..., None, None], self.bias, groups=self.groups
        )

    def dense_weight(self) -> torch.Tensor:
        """The (out_features, in_features) block-diagonal matrix this layer applies."""
        return torch.block_diag(*self.weight)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"groups={self.groups}, bias={self.bias is not None}"
        )


@torch.no_grad()
def bottleneck_affine(down: nn.Linear, up: GroupedLinear, scale: float) -> AffineMap:
    """``x + scale * up(down(x))`` (no dropout) as an `AffineMap` in float64."""
    up_weight = up.dense_weight().double()
    shift = torch.zeros(up_weight.shape[0], dtype=torch.float64, device=up_weight.device)
    if down.bias is not None and up.bias is not None:
        shift = shift + up_weight @ down.bias.double() + up.bias.double()
    return AffineMap(up=up_weight, down=down.weight.double(), scale=scale, shift=scale * shift)


class _DownFromNorm(torch.autograd.Function):
    """``down(y)`` where ``y = norm(x)``: backward recomputes ``y`` from ``x`` instead of keeping it.

    The norm keeps ``x`` for its own backward anyway, so the adapter adds no ``N x D`` tensor to
    what autograd saves. ``x``, ``down``'s weight and the norm's parameters are saved through
    autograd, so changing any of them in place before backward is autograd's usual error, never a
    gradient of other values. The norm is recomputed with its own ``forward`` (no hooks), which
    gives ``y`` bit for bit: same input, same parameters, no randomness.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        y: torch.Tensor,
        x: torch.Tensor,
        norm: nn.Module,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *norm_params: torch.Tensor,
    ) -> torch.Tensor:
        ctx.norm = norm
        ctx.save_for_backward(x, weight, *norm_params)
        return nn.functional.linear(y, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight, *norm_params = ctx.saved_tensors
        needs_y, _, _, needs_weight, needs_bias = ctx.needs_input_grad[:5]
        grad_y = grad @ weight if needs_y else None
        rows = grad.reshape(-1, grad.shape[-1])
        grad_weight = grad_bias = None
        if needs_weight:
            with torch.no_grad():
                y = type(ctx.norm).forward(ctx.norm, x)
            grad_weight = rows.T @ y.reshape(-1, y.shape[-1])
        if needs_bias:
            grad_bias = rows.sum(0)
        return (grad_y, None, None, grad_weight, grad_bias, *(None for _ in norm_params))


class RepAdapter(nn.Module):
    """``x + scale * up(dropout(down(x)))``, an exact identity when freshly made.

    Args:
        in_features: width d of the features it transforms.
        dim: bottleneck width r.
        groups: groups of ``up``; must divide both ``dim`` and ``in_features``.
        scale: s; multiplies the whole up branch, its bias included.
        dropout: dropout on the bottleneck (training only).
        bias: give ``down`` and ``up`` biases. Off where no layer can absorb the shift.
        channels_first: transform dim 1 of (N, C, H, W) maps, as 1x1 convolutions.
    """

    def __init__(
        self,
        in_features: int,
        dim: int = 8,
        groups: int = 2,
        scale: float = 1.0,
        dropout: float = 0.1,
        bias: bool = True,
        channels_first: bool = False,
    ) -> None:
        super().__init__()
        if dim % groups or in_features % groups:
            raise RepAdapterError(
                f"groups={groups} must divide both dim={dim} and in_features={in_features}; "
                "pick groups from the common divisors (1, 2, 4, 8 fit most ViTs with dim=8)"
            )
        self.scale = float(scale)
        self.channels_first = channels_first
        self.down = nn.Linear(in_features, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.up = GroupedLinear(dim, in_features, groups, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform ``down``, zero ``up`` and biases: the adapter starts as the identity."""
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.up.weight)
        for layer in (self.down, self.up):
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, norm: tuple[nn.Module, torch.Tensor] | None = None) -> torch.Tensor:
        """``norm``: the norm that made ``x`` and its input, when ``x`` is that norm's output;
        backward then recomputes ``x`` from the input the norm keeps instead of keeping ``x``
        too (same gradients, one ``N x D`` tensor fewer saved per site)."""
        if self.channels_first:
            hidden = nn.functional.conv2d(x, self.down.weight[..., None, None], self.down.bias)
            return x + self.scale * self.up.conv(self.dropout(hidden))
        if norm is None:
            hidden = self.down(x)
        else:
            module, source = norm
            hidden = _DownFromNorm.apply(
                x, source, module, self.down.weight, self.down.bias, *module.parameters()
            )
        return x + self.scale * self.up(self.dropout(hidden))

    def affine(self) -> AffineMap:
        """The eval-mode map ``(I + s*U@D) x + s*(U@b_down + b_up)``, in float64."""
        return bottleneck_affine(self.down, self.up, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}" + (", channels_first=True" if self.channels_first else "")
