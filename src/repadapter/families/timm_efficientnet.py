"""Adapter sites in timm's `EfficientNet` class: EfficientNet, EfficientNet-Lite, MobileNetV2,
MnasNet, ... (inverted-residual CNNs with batch norm).

Placement ``"block"`` puts an adapter, as 1x1 convolutions, on the input of every pointwise
convolution: ``conv_pw`` and ``conv_pwl`` of each block, and ``conv_head``. Those convolutions
have no bias; each adapter's shift goes into the running mean of the BatchNorm right after its
convolution, so a merged model has the same modules and parameters as the vanilla one (exact in
eval mode; see docs/placements.md). Depthwise convolutions get no adapter: they cannot take a
dense channel map.
"""

from __future__ import annotations

from typing import cast

from timm.models._efficientnet_blocks import DepthwiseSeparableConv, EdgeResidual, InvertedResidual
from timm.models.efficientnet import EfficientNet
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.base import Family, SiteSpec, register_family, timm_classifier_prefixes
from repadapter.families.timm_common import conv_bn_site

# block type -> its pointwise convolutions and the BatchNorm after each
_POINTWISE: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    DepthwiseSeparableConv: (("conv_pw", "bn2"),),
    InvertedResidual: (("conv_pw", "bn1"), ("conv_pwl", "bn3")),
    EdgeResidual: (("conv_pwl", "bn2"),),
}


def _sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    sites = []
    for i, stage in enumerate(cast(nn.Sequential, model.blocks)):
        for j, block in enumerate(cast(nn.Sequential, stage)):
            if type(block) not in _POINTWISE:
                raise RepAdapterError(
                    f"blocks.{i}.{j} is a {type(block).__qualname__}; repadapter supports EfficientNet "
                    f"blocks of type {', '.join(b.__qualname__ for b in _POINTWISE)}"
                )
            sites += [conv_bn_site(f"blocks.{i}.{j}", conv, bn) for conv, bn in _POINTWISE[type(block)]]
    if isinstance(model.get_submodule("conv_head"), nn.Conv2d):
        sites.append(SiteSpec("conv_head", ("",), batch_norms=("bn2",), channels_first=True))
    return sites


TIMM_EFFICIENTNET = register_family(
    Family(
        name="timm_efficientnet",
        description="timm EfficientNet-class CNNs (efficientnet_*, tf_efficientnet_lite*, mobilenetv2_*)",
        matches=lambda model: type(model) is EfficientNet,
        sites=_sites,
        head_prefixes=timm_classifier_prefixes,
        library="timm",
        placements=("block",),
    )
)
