"""Training methods under one interface, chosen with ``--method``: RepAdapter, the reference
points (linear probe, full fine-tuning) and the PETL baselines it is compared with.

`deploy` turns a trained model into what runs at inference: the vanilla architecture for
mergeable methods, a clear error for the others.
"""

from __future__ import annotations

import copy

from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.training.config import check_name
from repadapter.training.methods.base import Method, classifier_names, perturb_trained
from repadapter.training.methods.bottleneck_adapters import ADAPTER, ADAPTFORMER
from repadapter.training.methods.fact_tt import FACT_TT
from repadapter.training.methods.lora import LORA
from repadapter.training.methods.no_modules import BITFIT, FULL, LINEAR
from repadapter.training.methods.repadapter_method import REPADAPTER
from repadapter.training.methods.ssf import SSF
from repadapter.training.methods.vpt_deep import VPT_DEEP

METHODS: dict[str, Method] = {
    m.name: m for m in (REPADAPTER, LINEAR, FULL, BITFIT, LORA, SSF, FACT_TT, ADAPTER, ADAPTFORMER, VPT_DEEP)
}

__all__ = ["METHODS", "Method", "classifier_names", "deploy", "method", "perturb_trained"]


def method(name: str) -> Method:
    """The method called ``name`` (the ``--method`` value)."""
    return METHODS[check_name("method", name, tuple(METHODS))]


def deploy(model: nn.Module, name: str) -> nn.Module:
    """A copy of ``model``, trained with method ``name``, in its inference form: updates folded
    into the vanilla architecture. Non-mergeable methods are refused with the reason."""
    chosen = method(name)
    if chosen.merge is None:
        raise RepAdapterError(
            f"{chosen.name} ({chosen.description}) does not fold into the base model: its added "
            "modules stay at inference. Deploy the trained model as it is, or use a mergeable method "
            f"({', '.join(m.name for m in METHODS.values() if m.mergeable)})"
        )
    return chosen.merge(copy.deepcopy(model))
