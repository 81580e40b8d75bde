"""Layers that several timm families share."""

from __future__ import annotations

from timm.layers import GatedMlp, GluMlp, Mlp, SwiGLU
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.base import SiteSpec


def mlp_consumers(mlp: nn.Module) -> tuple[str, ...]:
    """The linear layers of a timm MLP that read its input."""
    if type(mlp) in (Mlp, GluMlp, GatedMlp):
        consumers: tuple[str, ...] = ("fc1",)
    elif type(mlp) is SwiGLU:
        consumers = ("fc1_g", "fc1_x")
    else:
        raise RepAdapterError(
            f"MLP layer {type(mlp).__qualname__} is not supported; supported: timm.layers "
            "Mlp, GluMlp, SwiGLUPacked, GatedMlp, SwiGLU"
        )
    if not all(type(mlp.get_submodule(name)) is nn.Linear for name in consumers):
        raise RepAdapterError(
            f"{type(mlp).__qualname__} with convolutional layers (use_conv=True) is not supported"
        )
    return consumers


def conv_bn_site(block: str, conv: str, batch_norm: str) -> SiteSpec:
    """An adapter on the input of convolution ``block.conv``, whose output only BatchNorm
    ``block.batch_norm`` reads: the adapter's shift goes into that norm's running mean."""
    return SiteSpec(f"{block}.{conv}", ("",), batch_norms=(f"{block}.{batch_norm}",), channels_first=True)
