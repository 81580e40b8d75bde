"""A classifier made of a vision tower that has no head of its own (a Hugging Face CLIP vision
model, an open_clip image tower) and a linear head on its pooled embedding: what
``hf:<CLIP folder>`` and ``open_clip:<arch>`` build for a task (`repadapter.families.towers`).

Its adapters go where the tower's own family puts them; the head trains as a classifier.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from repadapter.families.base import Family, SiteSpec, family_of, register_family, tower_sites


class TowerClassifier(nn.Module):
    """``head(tower(x))``, where ``tower`` returns the pooled embedding (a tensor, or a Hugging
    Face output whose ``pooler_output`` is read)."""

    def __init__(self, tower: nn.Module, features: int, num_classes: int) -> None:
        super().__init__()
        self.tower = tower
        self.head = nn.Linear(features, num_classes)
        self.num_classes = num_classes
        self.pretrained_cfg: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tower(x)
        return self.head(out if isinstance(out, torch.Tensor) else out.pooler_output)


def _sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    tower = model.get_submodule("tower")
    return tower_sites(model, "tower", family_of(tower).sites, placement)


TOWER_CLASSIFIER = register_family(
    Family(
        name="tower_classifier",
        description="a vision tower of another supported family with a linear head (hf:<CLIP>, open_clip:)",
        matches=lambda model: isinstance(model, TowerClassifier),
        sites=_sites,
        head_prefixes=lambda model: ("head",),
        library="repadapter",
    )
)
