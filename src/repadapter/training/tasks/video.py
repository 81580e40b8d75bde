"""Video classification: a VideoMAE backbone (`repadapter.families.video`) on clip lists
(`repadapter.training.data.video`), scored by top-1 accuracy over clips."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from repadapter.errors import RepAdapterError
from repadapter.families.video import create_video_model
from repadapter.training.config import TrainConfig
from repadapter.training.data.transforms import IMAGENET_MEAN, IMAGENET_STD, NORMALIZATIONS
from repadapter.training.data.video import ClipDataset, ClipSample
from repadapter.training.tasks.base import TaskKind, accuracy

DEFAULT_SAMPLING = "segment"


def _build(cfg: TrainConfig, num_classes: int) -> nn.Module:
    return create_video_model(
        cfg.model, num_classes, cfg.pretrained, cfg.checkpoint, cfg.drop_path, cfg.img_size, cfg.num_frames
    )


def video_preprocessing(model: nn.Module, normalization: str = "model") -> dict[str, Any]:
    """Frame size, mean, std, frames per clip and frame sampling of a video model (its
    ``pretrained_cfg``), or ImageNet's mean and std for ``normalization="imagenet"``."""
    if normalization not in NORMALIZATIONS:
        raise RepAdapterError(f"normalization {normalization!r} is not one of {NORMALIZATIONS}")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "num_frames" not in cfg or "input_size" not in cfg:
        raise RepAdapterError(
            f"a {type(model).__name__} has no video pretrained_cfg; build it with "
            "repadapter.families.video.create_video_model"
        )
    own = normalization == "model"
    return {
        "normalization": normalization,
        "input_size": list(cfg["input_size"][1:]),
        "mean": list(cfg["mean"] if own else IMAGENET_MEAN),
        "std": list(cfg["std"] if own else IMAGENET_STD),
        "interpolation": "bicubic",
        "num_frames": int(cfg["num_frames"]),
        "frame_sampling": cfg.get("frame_sampling", DEFAULT_SAMPLING),
    }


def _frames(prep: dict[str, Any], cfg: TrainConfig) -> int:
    """The model's frames per clip; ``cfg.num_frames`` built the model, so they must agree."""
    frames = int(prep["num_frames"])
    if cfg.num_frames is not None and cfg.num_frames != frames:
        raise RepAdapterError(
            f"num_frames={cfg.num_frames} but the model takes {frames} frames (its position table "
            "is fixed); build the model with the same num_frames"
        )
    return frames


def _train_clips(samples: Sequence[ClipSample], prep: dict[str, Any], cfg: TrainConfig) -> Dataset:
    return ClipDataset(samples, prep, _frames(prep, cfg), cfg.frame_sampling, train=True, seed=cfg.seed)


def _eval_clips(samples: Sequence[ClipSample], prep: dict[str, Any], cfg: TrainConfig) -> Dataset:
    return ClipDataset(samples, prep, _frames(prep, cfg), cfg.frame_sampling, train=False, seed=cfg.seed)


VIDEO = TaskKind(
    name="video",
    metric="accuracy",
    build_model=_build,
    preprocessing=video_preprocessing,
    train_dataset=_train_clips,
    eval_dataset=_eval_clips,
    loss=nn.functional.cross_entropy,
    score=accuracy,
)
