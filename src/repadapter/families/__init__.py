"""Where adapters go in each model family; importing this registers every family."""

from repadapter.families import timm_swin, timm_vit
from repadapter.families.base import Family, SiteSpec, family_of, register_family

__all__ = ["Family", "SiteSpec", "family_of", "register_family", "timm_swin", "timm_vit"]
