"""Adapter sites in timm's `ResNet` (resnet*, resnext*, wide_resnet*, ResNet-D variants).

Placement ``"block"`` puts an adapter, as 1x1 convolutions, on the input of the pointwise
convolutions of each `Bottleneck` (``conv1``, ``conv3``), whose shift goes into the running
mean of the BatchNorm after each (exact in eval mode). A `BasicBlock` (resnet18/34) has no
pointwise convolution: its adapters go before the dense 3x3 ``conv1`` and ``conv2``, where the
linear part folds tap by tap but the zero padding keeps a shift from folding, so they are built
bias-free. Grouped 3x3 convolutions (ResNeXt) never get an adapter.
"""

from __future__ import annotations

from typing import cast

from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.base import Family, SiteSpec, register_family, timm_classifier_prefixes
from repadapter.families.timm_common import conv_bn_site

_CONVS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    Bottleneck: (("conv1", "bn1"), ("conv3", "bn3")),
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
}


def _sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    sites = []
    for i in range(1, 5):
        for j, block in enumerate(cast(nn.Sequential, model.get_submodule(f"layer{i}"))):
            if type(block) not in _CONVS:
                raise RepAdapterError(
                    f"layer{i}.{j} is a {type(block).__qualname__}; repadapter supports ResNet blocks "
                    "of type Bottleneck, BasicBlock"
                )
            sites += [conv_bn_site(f"layer{i}.{j}", conv, bn) for conv, bn in _CONVS[type(block)]]
    return sites


TIMM_RESNET = register_family(
    Family(
        name="timm_resnet",
        description="timm ResNet models (resnet*, resnext*, wide_resnet*)",
        matches=lambda model: type(model) is ResNet,
        sites=_sites,
        head_prefixes=timm_classifier_prefixes,
        library="timm",
        placements=("block",),
    )
)
