"""Adapter sites in a `repadapter.training.tasks.segmentation.Segmenter`: its backbone's own.

The sites are those of the backbone's family (timm ViT, Swin, ...), every path under
``backbone.``; the decode head is the head that trains. A Segmenter is recognised by its class
name, so registering this family does not import the task code (which imports the engine).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from repadapter.config import ALL_PLACEMENTS, RepAdapterConfig
from repadapter.families.base import Family, SiteSpec, family_of, is_instance_of, register_family

SEGMENTER_CLASS = "repadapter.training.tasks.segmentation.Segmenter"
BACKBONE = "backbone"


def _under(path: str | None) -> str | None:
    return f"{BACKBONE}.{path}" if path else path


def backbone_family(model: nn.Module) -> Family:
    """The family of a Segmenter's backbone."""
    return family_of(model.get_submodule(BACKBONE))


def _sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    family = backbone_family(model)
    RepAdapterConfig.check_placement(placement, family.placements, f"{family.name} backbones")
    return [
        dataclasses.replace(
            site,
            host=f"{BACKBONE}.{site.host}",
            bias_sink=_under(site.bias_sink),
            batch_norms=tuple(_under(p) for p in site.batch_norms),
        )
        for site in family.sites(model.get_submodule(BACKBONE), placement)
    ]


SEGMENTER = register_family(
    Family(
        name="segmenter",
        description="repadapter Segmenter (a timm ViT or Swin backbone with a decode head)",
        matches=lambda model: is_instance_of(model, SEGMENTER_CLASS),
        sites=_sites,
        head_prefixes=lambda model: ("decode_head",),
        library="repadapter",
        task="segmentation",
        placements=ALL_PLACEMENTS,  # each backbone family checks its own in `_sites`
    )
)
