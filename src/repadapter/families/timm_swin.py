"""Adapter sites in timm's `SwinTransformer`: before window attention and before the MLP,
in every block of every stage.

A Swin block pads the normalised tokens with zeros between ``norm1`` and the attention when
the feature map is not a whole number of windows, and the padded tokens take part in attention.
Shifting ``norm1``'s bias would not reach them, so attention sites never use the norm as a bias
sink: with ``qkv_bias=True`` (every released Swin) the shift folds into ``qkv.bias`` exactly,
padded tokens included; without it the adapter is bias-free. MLP sites read ``norm2(x)``
directly and use its bias when ``fc1`` has none.
"""

from __future__ import annotations

from typing import cast

from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock, WindowAttention
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.base import Family, SiteSpec, register_family, timm_classifier_prefixes
from repadapter.families.timm_common import mlp_consumers


def _sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    sites = []
    for i, stage in enumerate(cast(nn.Sequential, model.layers)):
        for j, block in enumerate(cast(nn.Sequential, stage.get_submodule("blocks"))):
            where = f"layers.{i}.blocks.{j}"
            if (
                type(block) is not SwinTransformerBlock
                or type(block.get_submodule("attn")) is not WindowAttention
            ):
                raise RepAdapterError(
                    f"{where} is a {type(block).__qualname__}; repadapter supports Swin blocks of type "
                    "SwinTransformerBlock with WindowAttention"
                )
            sites.append(SiteSpec(host=f"{where}.attn", consumers=("qkv",), bias_sink=None))
            if placement == "block":
                consumers = mlp_consumers(block.get_submodule("mlp"))
                sites.append(SiteSpec(host=f"{where}.mlp", consumers=consumers, bias_sink=f"{where}.norm2"))
    return sites


TIMM_SWIN = register_family(
    Family(
        name="timm_swin",
        description="timm SwinTransformer models (swin_*)",
        matches=lambda model: isinstance(model, SwinTransformer),
        sites=_sites,
        head_prefixes=timm_classifier_prefixes,
        library="timm",
    )
)
