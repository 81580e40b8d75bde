"""The model families: where adapters go in each, its head, its task, and building models by
name (`repadapter.families.factory`); importing this registers every family.

Families of optional libraries (Hugging Face transformers, open_clip) recognise models by
class name, so registering them imports neither library.
"""

from repadapter.families import (
    generic,
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
from repadapter.families.base import (
    TASKS,
    Family,
    SiteSpec,
    family_named,
    family_of,
    find_family,
    head_of,
    register_family,
    task_of,
)

__all__ = [
    "TASKS",
    "Family",
    "SiteSpec",
    "family_named",
    "family_of",
    "find_family",
    "generic",
    "head_of",
    "hf_clip",
    "hf_videomae",
    "hf_vit",
    "open_clip_vit",
    "register_family",
    "segmenter",
    "task_of",
    "timm_convnext",
    "timm_efficientnet",
    "timm_resnet",
    "timm_swin",
    "timm_vit",
    "tower_classifier",
]
