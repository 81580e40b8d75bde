"""Adapter sites in timm's `ConvNeXt` (v1 and v2, channels-last Linear or 1x1-conv MLPs).

A block is ``x + gamma * fc2(act(fc1(norm(dwconv(x)))))``. Placements:

* ``"block"`` (default): an adapter on ``fc1``'s input, the normalised features, which only
  ``fc1`` reads; its shift goes into ``fc1.bias``.
* ``"io"``: also one on ``fc2``'s output, folded into ``fc2`` as its producer
  (``M (W h + b) + c``), before LayerScale and the residual add.
* ``"dwconv"``: the paper's placement, before the depthwise 7x7 convolution. It trains and
  saves, but does not merge: folding a dense channel map into a depthwise kernel makes it dense
  (another architecture), and the zero padding keeps the shift from folding at the borders.
"""

from __future__ import annotations

from typing import cast

from timm.layers import ConvMlp, GlobalResponseNormMlp, Mlp
from timm.models.convnext import ConvNeXt, ConvNeXtBlock
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.base import Family, SiteSpec, register_family, timm_classifier_prefixes

DWCONV_NOT_FOLDABLE = (
    "placement 'dwconv' puts adapters before ConvNeXt's depthwise 7x7 convolutions, which cannot "
    "take a dense channel map without becoming dense convolutions (a different architecture). "
    "Use the model unmerged (save_adapter / load_adapter), or train with placement='block' or "
    "'io', which merge exactly"
)


def _sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    sites = []
    for i, stage in enumerate(cast(nn.Sequential, model.stages)):
        for j, block in enumerate(cast(nn.Sequential, stage.get_submodule("blocks"))):
            where = f"stages.{i}.blocks.{j}"
            mlp = block.get_submodule("mlp")
            if type(block) is not ConvNeXtBlock or type(mlp) not in (Mlp, ConvMlp, GlobalResponseNormMlp):
                raise RepAdapterError(
                    f"{where} is a {type(block).__qualname__} with a {type(mlp).__qualname__}; repadapter "
                    "supports ConvNeXtBlock with timm Mlp, ConvMlp or GlobalResponseNormMlp"
                )
            channels_first = isinstance(mlp.get_submodule("fc1"), nn.Conv2d)
            if placement == "dwconv":
                sites.append(
                    SiteSpec(f"{where}.conv_dw", (), channels_first=True, not_foldable=DWCONV_NOT_FOLDABLE)
                )
                continue
            sites.append(
                SiteSpec(f"{where}.mlp", ("fc1",), bias_sink=f"{where}.norm", channels_first=channels_first)
            )
            if placement == "io":
                sites.append(SiteSpec(f"{where}.mlp.fc2", (), output=True, channels_first=channels_first))
    return sites


TIMM_CONVNEXT = register_family(
    Family(
        name="timm_convnext",
        description="timm ConvNeXt models (convnext_*, convnextv2_*)",
        matches=lambda model: isinstance(model, ConvNeXt),
        sites=_sites,
        head_prefixes=timm_classifier_prefixes,
        library="timm",
        placements=("block", "io", "dwconv"),
    )
)
