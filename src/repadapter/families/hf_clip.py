"""Adapter sites in Hugging Face `CLIPVisionModel` / `CLIPVisionModelWithProjection`: before each
encoder layer's self-attention (one adapter for q, k, v) and, for ``"block"``, before its MLP.
The projection to the joint embedding is not a classifier: it stays frozen.

A whole `CLIPModel` is a family of its own: its adapters go into the image tower
``vision_model`` at the same sites, and everything else (the text tower, ``logit_scale``,
both projections) stays frozen.
"""

from __future__ import annotations

from torch import nn

from repadapter.families.base import Family, SiteSpec, is_instance_of, register_family, tower_sites
from repadapter.families.hf_common import LayerLayout, layer_sites

_CLIP = "transformers.models.clip.modeling_clip."
_LAYOUT = LayerLayout(f"{_CLIP}CLIPEncoderLayer", "layer_norm1", "self_attn", "layer_norm2", "mlp")


def _matches(model: nn.Module) -> bool:
    return any(
        is_instance_of(model, f"{_CLIP}{name}")
        for name in ("CLIPVisionModel", "CLIPVisionModelWithProjection")
    )


def _sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    return layer_sites(model, placement, _LAYOUT)


HF_CLIP = register_family(
    Family(
        name="hf_clip",
        description="Hugging Face CLIPVisionModel, CLIPVisionModelWithProjection",
        matches=_matches,
        sites=_sites,
        head_prefixes=lambda model: (),
        library="transformers",
    )
)


HF_CLIP_MODEL = register_family(
    Family(
        name="hf_clip_model",
        description="Hugging Face CLIPModel (adapters in the image tower, the rest frozen)",
        matches=lambda model: is_instance_of(model, f"{_CLIP}CLIPModel"),
        sites=lambda model, placement: tower_sites(model, "vision_model", _sites, placement),
        head_prefixes=lambda model: (),
        library="transformers",
    )
)
