"""What the Hugging Face vision transformers share: pre-norm encoder layers whose attention
reads the first norm's output through separate ``q_proj``, ``k_proj``, ``v_proj`` Linears, and
whose MLP reads the second norm's output through ``fc1`` (or a SwiGLU's ``gate_proj`` and
``up_proj``). One adapter per input folds into every projection that reads it.

Written against transformers 5.x module names; other layouts are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.base import SiteSpec, is_instance_of

QKV = ("q_proj", "k_proj", "v_proj")


@dataclass(frozen=True)
class LayerLayout:
    """Names inside one encoder layer class."""

    layer_class: str  # qualified class name of the encoder layer
    norm1: str
    attn: str
    norm2: str
    mlp: str


def _mlp_consumers(mlp: nn.Module) -> tuple[str, ...]:
    names = {name for name, _ in mlp.named_children()}
    for consumers in (("fc1",), ("gate_proj", "up_proj")):
        if names.issuperset(consumers):
            return consumers
    raise RepAdapterError(f"{type(mlp).__qualname__} has neither fc1 nor gate_proj/up_proj")


def layer_sites(model: nn.Module, placement: str, layout: LayerLayout) -> list[SiteSpec]:
    """Sites in every encoder layer of ``layout.layer_class`` in ``model``."""
    layers = [(n, m) for n, m in model.named_modules() if is_instance_of(m, layout.layer_class)]
    if not layers:
        raise RepAdapterError(f"found no {layout.layer_class} layers; is this transformers 5.x?")
    sites = []
    for name, layer in layers:
        children = {child for child, _ in layer.named_children()}
        attn_children = {child for child, _ in layer.get_submodule(layout.attn).named_children()}
        if (
            not {layout.norm1, layout.attn, layout.norm2, layout.mlp} <= children
            or not set(QKV) <= attn_children
        ):
            raise RepAdapterError(
                f"{name} does not have the transformers 5.x layout ({layout}); install transformers>=5"
            )
        sites.append(SiteSpec(f"{name}.{layout.attn}", QKV, bias_sink=f"{name}.{layout.norm1}"))
        if placement == "block":
            consumers = _mlp_consumers(layer.get_submodule(layout.mlp))
            sites.append(SiteSpec(f"{name}.{layout.mlp}", consumers, bias_sink=f"{name}.{layout.norm2}"))
    return sites


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """``("classifier",)`` for the image-classification heads; base models have no head."""
    return ("classifier",) if "classifier" in dict(model.named_children()) else ()
