"""Image classification: the paper's task, and the engine's default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from repadapter.families.factory import create_base
from repadapter.training.config import TrainConfig
from repadapter.training.data.cache import CachedImages
from repadapter.training.data.lists import ImageListDataset, Sample
from repadapter.training.data.transforms import eval_transform, fewshot_train_transform, preprocessing
from repadapter.training.tasks.base import TaskKind, accuracy


def _build(cfg: TrainConfig, num_classes: int) -> nn.Module:
    return create_base(cfg.model, num_classes, cfg.pretrained, cfg.checkpoint, cfg.drop_path, cfg.img_size)


def _train_images(samples: Sequence[Sample], prep: dict[str, Any], cfg: TrainConfig) -> Dataset:
    """The few-shot recipe augments; the VTAB recipe trains on the evaluation preprocessing."""
    if cfg.augment == "fewshot":
        return ImageListDataset(samples, fewshot_train_transform(prep))
    return _eval_images(samples, prep, cfg)


def _eval_images(samples: Sequence[Sample], prep: dict[str, Any], cfg: TrainConfig) -> Dataset:
    """Without random augmentation every read of an image gives the same tensor: decode and
    resize it once (``cfg.data_cache``), unless the cache is off."""
    if cfg.data_cache == "off":
        return ImageListDataset(samples, eval_transform(prep))
    return CachedImages(samples, prep, cfg.data_cache, cfg.workers)


CLASSIFICATION = TaskKind(
    name="classification",
    metric="accuracy",
    build_model=_build,
    preprocessing=preprocessing,
    train_dataset=_train_images,
    eval_dataset=_eval_images,
    loss=nn.functional.cross_entropy,
    score=accuracy,
)
