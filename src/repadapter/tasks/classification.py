"""Image classification: the paper's task, and the engine's default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from repadapter.backbones import create_base
from repadapter.data.lists import ImageListDataset, Sample
from repadapter.data.transforms import eval_transform, fewshot_train_transform, preprocessing
from repadapter.engine.recipe import TrainConfig
from repadapter.tasks.base import TaskKind, accuracy


def _build(cfg: TrainConfig, num_classes: int) -> nn.Module:
    return create_base(cfg.model, num_classes, cfg.pretrained, cfg.checkpoint, cfg.drop_path, cfg.img_size)


def _train_images(samples: Sequence[Sample], prep: dict[str, Any], cfg: TrainConfig) -> Dataset:
    """The few-shot recipe augments; the VTAB recipe trains on the evaluation preprocessing."""
    transform = fewshot_train_transform(prep) if cfg.augment == "fewshot" else eval_transform(prep)
    return ImageListDataset(samples, transform)


def _eval_images(samples: Sequence[Sample], prep: dict[str, Any], cfg: TrainConfig) -> Dataset:
    return ImageListDataset(samples, eval_transform(prep))


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
