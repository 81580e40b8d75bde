"""Adapter sites in Hugging Face `VideoMAEModel` / `VideoMAEForVideoClassification`.

A `VideoMAELayer` is pre-norm: ``layernorm_before`` feeds only ``attention`` (whose inner
``attention`` has separate ``query``, ``key``, ``value`` Linears; the residual adds the layer's
input, not the norm's output), and ``layernorm_after`` feeds only ``intermediate`` (``dense`` is
fc1). So one adapter on ``attention``'s input folds into query, key and value, and one on
``intermediate``'s input folds into its ``dense``.

``key`` never has a bias (and ``query`` / ``value`` have none when ``qv_bias=False``), so the
attention adapter's shift goes into ``layernorm_before``'s bias as ``M^-1 c``: every consumer,
biased or not, then sees ``W M (y + M^-1 c) = W (M y + c)``, which is exact.

The head is ``classifier`` only: the paper's recipe trains the adapters and the classifier;
``fc_norm`` (the norm after mean pooling) stays frozen like every other norm.
"""

from __future__ import annotations

from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.base import Family, SiteSpec, is_instance_of, register_family
from repadapter.families.hf_common import classifier_prefixes

_VIDEOMAE = "transformers.models.videomae.modeling_videomae."
_MODELS = tuple(f"{_VIDEOMAE}{name}" for name in ("VideoMAEModel", "VideoMAEForVideoClassification"))
_LAYER = f"{_VIDEOMAE}VideoMAELayer"
QKV = ("attention.query", "attention.key", "attention.value")


def _matches(model: nn.Module) -> bool:
    return any(is_instance_of(model, name) for name in _MODELS)


def _sites(model: nn.Module, placement: str) -> list[SiteSpec]:
    layers = [(n, m) for n, m in model.named_modules() if is_instance_of(m, _LAYER)]
    if not layers:
        raise RepAdapterError(f"found no {_LAYER} layers; is this transformers 5.x?")
    sites = []
    for name, layer in layers:
        modules = dict(layer.named_modules())
        wanted = [
            "layernorm_before",
            "layernorm_after",
            *(f"attention.{path}" for path in QKV),
            "intermediate.dense",
        ]
        if any(not isinstance(modules.get(path), nn.LayerNorm | nn.Linear) for path in wanted):
            raise RepAdapterError(
                f"{name} does not have the transformers 5.x VideoMAE layout (layernorm_before, "
                "attention.attention.{query,key,value}, layernorm_after, intermediate.dense); "
                "install transformers>=5"
            )
        sites.append(SiteSpec(f"{name}.attention", QKV, bias_sink=f"{name}.layernorm_before"))
        if placement == "block":
            sites.append(SiteSpec(f"{name}.intermediate", ("dense",), bias_sink=f"{name}.layernorm_after"))
    return sites


HF_VIDEOMAE = register_family(
    Family(
        name="hf_videomae",
        description="Hugging Face VideoMAEModel, VideoMAEForVideoClassification",
        matches=_matches,
        sites=_sites,
        head_prefixes=classifier_prefixes,
        library="transformers",
        task="video",
    )
)
