"""Adapter sites in open_clip's image tower (`open_clip.transformer.VisionTransformer`, i.e.
``open_clip.create_model(...).visual``).

Each `ResidualAttentionBlock` calls ``nn.MultiheadAttention(x, x, x)`` on ``ln_1(x)``. The
adapter transforms that one tensor, passed as query, key and value, and folds into the fused
``in_proj_weight`` / ``in_proj_bias``. For ``"block"`` one more goes on the input of the MLP's
``c_fc`` (inside it: the MLP is an ``nn.Sequential``, which would run a child adapter last).
The embedding projection ``proj`` is not a classifier: it stays frozen.

A whole open_clip model (`open_clip.model.CLIP`, `CustomTextCLIP`) is a family of its own:
its adapters go into the image tower ``visual`` at the same sites, and everything else (the
text tower, ``logit_scale``, both projections) stays frozen.
"""

from __future__ import annotations

from typing import cast

from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.base import Family, SiteSpec, is_instance_of, register_family, tower_sites

_TOWER = "open_clip.transformer.VisionTransformer"
_BLOCK = "open_clip.transformer.ResidualAttentionBlock"
_MODELS = ("open_clip.model.CLIP", "open_clip.model.CustomTextCLIP")


def _sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    sites = []
    for i, block in enumerate(cast(nn.ModuleList, model.get_submodule("transformer.resblocks"))):
        where = f"transformer.resblocks.{i}"
        attn = block.get_submodule("attn")
        if (
            not is_instance_of(block, _BLOCK)
            or type(attn) is not nn.MultiheadAttention
            or hasattr(block, "ln_1_kv")
        ):
            raise RepAdapterError(
                f"{where} is a {type(block).__qualname__}; repadapter supports open_clip "
                "ResidualAttentionBlock self-attention with nn.MultiheadAttention (not block_type='custom')"
            )
        sites.append(SiteSpec(f"{where}.attn", ("",), bias_sink=f"{where}.ln_1"))
        if placement == "block":
            # the MLP is an nn.Sequential, so the adapter lives in its first layer
            sites.append(SiteSpec(f"{where}.mlp.c_fc", ("",), bias_sink=f"{where}.ln_2"))
    return sites


OPEN_CLIP_VIT = register_family(
    Family(
        name="open_clip_vit",
        description="open_clip image towers (open_clip.create_model(...).visual, ViT)",
        matches=lambda model: is_instance_of(model, _TOWER),
        sites=_sites,
        head_prefixes=lambda model: (),
        library="open_clip",
    )
)


def _model_sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    tower = model.get_submodule("visual")
    if not is_instance_of(tower, _TOWER):
        raise RepAdapterError(
            f"the image tower (visual) of this {type(model).__name__} is a {type(tower).__qualname__}; "
            f"repadapter adapts open_clip ViT image towers ({_TOWER}) only"
        )
    return tower_sites(model, "visual", _sites, placement)


OPEN_CLIP_MODEL = register_family(
    Family(
        name="open_clip",
        description="open_clip CLIP and CustomTextCLIP models (adapters in the ViT image tower, "
        "the rest frozen)",
        matches=lambda model: any(is_instance_of(model, name) for name in _MODELS),
        sites=_model_sites,
        head_prefixes=lambda model: (),
        library="open_clip",
    )
)
