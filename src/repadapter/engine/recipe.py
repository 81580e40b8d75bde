"""`TrainConfig`: every number of a training run, with the paper's recipe as the defaults.

Values come from the defaults, then a YAML file (``--config``), then command-line flags; the
resolved config is saved with each run.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from repadapter.config import ALL_PLACEMENTS
from repadapter.data.cache import CACHE_MODES
from repadapter.data.transforms import NORMALIZATIONS
from repadapter.data.video import SAMPLINGS as FRAME_SAMPLINGS
from repadapter.errors import RepAdapterError

SCALE_CANDIDATES = (0.1, 0.5, 1.0, 5.0, 10.0)
AMP_MODES = ("none", "bf16", "fp16")
AUGMENTS = ("none", "fewshot")
SELECTIONS = ("val", "test", "none")
SEG_EVALS = ("resize", "slide")


@dataclass(frozen=True)
class TrainConfig:
    """A training run. Defaults: the paper's VTAB-1k recipe for ViT-B/16 (ImageNet-21k)."""

    task: str = "classification"
    method: str = "repadapter"
    model: str = "vit_base_patch16_224.orig_in21k"
    pretrained: bool = True
    checkpoint: str | None = None
    img_size: int | None = None
    placement: str = "block"
    dim: int = 8
    groups: int = 2
    scale: str = "auto"
    dropout: float = 0.1
    epochs: int = 100
    warmup_epochs: int = 10
    lr: float = 1e-3
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    weight_decay: float = 1e-4
    batch_size: int = 64
    eval_batch_size: int = 256
    drop_path: float = 0.1
    normalization: str = "model"
    augment: str = "none"
    mixup: float = 0.8
    cutmix: float = 1.0
    label_smoothing: float = 0.1
    selection: str = "val"
    eval_every: int = 10
    amp: str = "none"
    compile: bool = False
    grad_checkpointing: bool = False
    data_cache: str = "auto"
    workers: int = 4
    seed: int = 42
    device: str = "auto"
    # video: frames per clip (None: the model's own) and how they are drawn from a clip
    num_frames: int | None = None
    frame_sampling: str = "segment"
    # segmentation: evaluate on the resized image, or in sliding windows over the full image;
    # how many of the backbone's last blocks (stages) the decode head reads
    seg_eval: str = "resize"
    seg_levels: int = 1

    def __post_init__(self) -> None:
        checks = [
            (self.frame_sampling in FRAME_SAMPLINGS, f"frame_sampling must be one of {FRAME_SAMPLINGS}"),
            (self.seg_eval in SEG_EVALS, f"seg_eval must be one of {SEG_EVALS}"),
            (self.num_frames is None or self.num_frames >= 1, "num_frames must be positive"),
            (self.seg_levels >= 1, "seg_levels must be positive"),
            (self.placement in ALL_PLACEMENTS, f"placement must be one of {ALL_PLACEMENTS}"),
            (self.normalization in NORMALIZATIONS, f"normalization must be one of {NORMALIZATIONS}"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}"),
            (self.data_cache in CACHE_MODES, f"data_cache must be one of {CACHE_MODES}"),
            (self.augment in AUGMENTS, f"augment must be one of {AUGMENTS}"),
            (self.selection in SELECTIONS, f"selection must be one of {SELECTIONS}"),
            (
                self.epochs >= 1 and 0 <= self.warmup_epochs < self.epochs,
                "need epochs >= 1 and 0 <= warmup_epochs < epochs",
            ),
            (self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be positive"),
            (self.eval_every >= 1, "eval_every must be positive"),
            (self.lr > 0 and self.min_lr >= 0 and self.warmup_lr >= 0, "learning rates must be positive"),
            (0 <= self.drop_path < 1, "drop_path must be in [0, 1)"),
            (self.workers >= 0, "workers must be >= 0"),
            (self.dim >= 1 and self.groups >= 1, "dim and groups must be positive"),
            (self.img_size is None or self.img_size >= 1, "img_size must be positive"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix must be >= 0"),
            (
                all(math.isfinite(getattr(self, f.name)) for f in fields(self) if f.type == "float"),
                "every number must be finite",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise RepAdapterError(f"bad training config: {message}")
        from repadapter.methods import method
        from repadapter.tasks import task_kind

        method(self.method)
        task_kind(self.task)
        if self.augment == "fewshot" and self.task != "classification":
            raise RepAdapterError(
                f"bad training config: augment 'fewshot' is the few-shot classification recipe; "
                f"a {self.task} task trains with augment 'none'"
            )
        if self.scale not in ("auto", "paper"):
            try:
                value = float(self.scale)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value > 0):
                raise RepAdapterError(
                    f"scale must be 'auto', 'paper' or a number above 0, got {self.scale!r}"
                )
        if self.method == "repadapter" and self.dim % self.groups:
            raise RepAdapterError(
                f"bad training config: dim={self.dim} is not divisible by groups={self.groups}; "
                "pick groups that divide dim (e.g. dim=8 with groups 1, 2, 4 or 8)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_config(yaml_file: str | os.PathLike[str] | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then ``yaml_file``, then the ``overrides`` that are not None."""
    known = {f.name: f for f in fields(TrainConfig)}
    values: dict[str, Any] = {}
    if yaml_file is not None:
        path = Path(yaml_file)
        if not path.is_file():
            raise RepAdapterError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise RepAdapterError(f"config file {path} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise RepAdapterError(f"config file {path} must hold a mapping of setting: value")
        unknown = set(loaded) - set(known)
        if unknown:
            raise RepAdapterError(
                f"config file {path} has unknown settings {sorted(unknown)}; known: {sorted(known)}"
            )
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "scale" in values:
        values["scale"] = str(values["scale"])
    try:
        return replace(TrainConfig(), **values)
    except TypeError as err:
        raise RepAdapterError(f"bad training config: {err}") from err
