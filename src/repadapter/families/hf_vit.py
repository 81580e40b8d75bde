"""Adapter sites in Hugging Face `ViTModel` / `ViTForImageClassification` and `Dinov2Model` /
`Dinov2ForImageClassification`: before each layer's attention (one adapter for the three
q, k, v projections) and, for ``"block"``, before its MLP. DINOv2's LayerScale comes after the
attention and MLP outputs, so it does not touch the fold.
"""

from __future__ import annotations

from torch import nn

from repadapter.families.base import Family, SiteSpec, is_instance_of, register_family
from repadapter.families.hf_common import LayerLayout, classifier_prefixes, layer_sites

_VIT = "transformers.models.vit.modeling_vit."
_DINOV2 = "transformers.models.dinov2.modeling_dinov2."
_MODELS = {
    f"{_VIT}ViTModel": LayerLayout(
        f"{_VIT}ViTLayer", "layernorm_before", "attention", "layernorm_after", "mlp"
    ),
    f"{_DINOV2}Dinov2Model": LayerLayout(f"{_DINOV2}Dinov2Layer", "norm1", "attention", "norm2", "mlp"),
}
_MODELS[f"{_VIT}ViTForImageClassification"] = _MODELS[f"{_VIT}ViTModel"]
_MODELS[f"{_DINOV2}Dinov2ForImageClassification"] = _MODELS[f"{_DINOV2}Dinov2Model"]


def _layout(model: nn.Module) -> LayerLayout | None:
    return next((layout for name, layout in _MODELS.items() if is_instance_of(model, name)), None)


def _sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    layout = _layout(model)
    assert layout is not None  # matched
    return layer_sites(model, placement, layout)


HF_VIT = register_family(
    Family(
        name="hf_vit",
        description="Hugging Face ViTModel, ViTForImageClassification, Dinov2Model, "
        "Dinov2ForImageClassification",
        matches=lambda model: _layout(model) is not None,
        sites=_sites,
        head_prefixes=classifier_prefixes,
        library="transformers",
    )
)
