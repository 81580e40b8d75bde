"""Building backbones by name; the one place the library calls `timm.create_model`."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from repadapter.errors import RepAdapterError


def create(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained, **kwargs)``, with a clear error for unknown names."""
    if not timm.is_model(name.split(".")[0]):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:6]
        raise RepAdapterError(
            f"unknown model {name!r}; timm names look like {close or ['vit_base_patch16_224']}"
            " (timm.list_models() lists them all)"
        )
    return timm.create_model(name, pretrained=pretrained, **kwargs)
