"""Building backbones by name; the one place the library calls `timm.create_model`."""

from __future__ import annotations

import os
from pathlib import Path
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


def create_base(
    name: str,
    num_classes: int,
    pretrained: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    drop_path: float = 0.0,
    img_size: int | None = None,
) -> nn.Module:
    """A base model for a task: hub weights (``pretrained``), a local weights file
    (``checkpoint``, read through timm's own pretrained-loading path, which drops a
    classifier of another size), or random init. ``img_size`` builds it at another input size
    (timm resamples a ViT's position embeddings when it loads the weights)."""
    kwargs: dict[str, Any] = {"num_classes": num_classes, "drop_path_rate": drop_path}
    if img_size is not None:
        kwargs["img_size"] = img_size
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise RepAdapterError(f"base checkpoint {checkpoint} does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": str(checkpoint)}
    try:
        return create(name, pretrained=pretrained or checkpoint is not None, **kwargs)
    except RuntimeError as err:  # timm's strict load: the weights are for another architecture
        raise RepAdapterError(
            f"cannot load the weights of {name} from {checkpoint or 'the hub'}: {err}"
        ) from err
