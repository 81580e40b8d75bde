"""Adapter sites in Hugging Face `CLIPVisionModel` / `CLIPVisionModelWithProjection`: before each
encoder layer's self-attention (one adapter for q, k, v) and, for ``"block"``, before its MLP.
The projection to the joint embedding is not a classifier: it stays frozen.
"""

from __future__ import annotations

from torch import nn

from repadapter.families.base import Family, SiteSpec, is_instance_of, register_family
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
    )
)
