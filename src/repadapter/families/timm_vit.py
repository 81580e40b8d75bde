"""Adapter sites in timm's `VisionTransformer` (ViT, DeiT, DeiT-3, CLIP-style, SigLIP, ...).

Placement "attn" puts one adapter on the input of each block's attention, "block" one more on
the input of its MLP. In a pre-norm `Block` those inputs are ``norm1(x)`` and ``norm2(x)``,
read by nothing else, so the norms can take an adapter's shift when the projections have no
bias (``qkv_bias=False`` models). In a `ResPostBlock` the inputs are the residual stream
itself, so there is no such norm.
"""

from __future__ import annotations

from typing import cast

from timm.layers import Attention, DiffAttention
from timm.models.vision_transformer import Block, ResPostBlock, VisionTransformer
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.base import Family, SiteSpec, register_family, timm_classifier_prefixes
from repadapter.families.timm_common import mlp_consumers

_PRE_NORM_BLOCKS = (Block,)
_SUPPORTED_BLOCKS = (Block, ResPostBlock)


def _attention_consumers(attn: nn.Module) -> tuple[str, ...]:
    if type(attn) is Attention:
        return ("qkv",) if attn.gate is None else ("qkv", "gate")
    if type(attn) is DiffAttention:
        return ("qkv",)
    raise RepAdapterError(
        f"attention layer {type(attn).__qualname__} is not supported; supported: "
        "timm.layers.Attention, timm.layers.DiffAttention"
    )


def _sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    sites = []
    for i, block in enumerate(cast(nn.Sequential, model.blocks)):
        if type(block) not in _SUPPORTED_BLOCKS:
            raise RepAdapterError(
                f"blocks.{i} is a {type(block).__qualname__}; repadapter supports ViT blocks of "
                f"type {', '.join(b.__qualname__ for b in _SUPPORTED_BLOCKS)} (parallel blocks "
                "such as ParallelScalingBlock / ParallelThingsBlock are not supported)"
            )
        pre_norm = type(block) in _PRE_NORM_BLOCKS
        sites.append(
            SiteSpec(
                host=f"blocks.{i}.attn",
                consumers=_attention_consumers(block.get_submodule("attn")),
                bias_sink=f"blocks.{i}.norm1" if pre_norm else None,
            )
        )
        if placement == "block":
            sites.append(
                SiteSpec(
                    host=f"blocks.{i}.mlp",
                    consumers=mlp_consumers(block.get_submodule("mlp")),
                    bias_sink=f"blocks.{i}.norm2" if pre_norm else None,
                )
            )
    return sites


TIMM_VIT = register_family(
    Family(
        name="timm_vit",
        description="timm VisionTransformer models (vit_*, deit_*, deit3_*, CLIP/SigLIP ViTs)",
        matches=lambda model: isinstance(model, VisionTransformer),
        sites=_sites,
        head_prefixes=timm_classifier_prefixes,
        library="timm",
    )
)
