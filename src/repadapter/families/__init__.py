"""Where adapters go in each model family; importing this registers every family.

Families of optional libraries (Hugging Face transformers, open_clip) recognise models by
class name, so registering them imports neither library.
"""

from repadapter.families import (
    hf_clip,
    hf_videomae,
    hf_vit,
    open_clip_vit,
    segmenter,
    timm_convnext,
    timm_efficientnet,
    timm_resnet,
    timm_swin,
    timm_vit,
    tower_classifier,
)
from repadapter.families.base import Family, SiteSpec, family_of, register_family

__all__ = [
    "Family",
    "SiteSpec",
    "family_of",
    "hf_clip",
    "hf_videomae",
    "hf_vit",
    "open_clip_vit",
    "register_family",
    "segmenter",
    "timm_convnext",
    "timm_efficientnet",
    "timm_resnet",
    "timm_swin",
    "timm_vit",
    "tower_classifier",
]
