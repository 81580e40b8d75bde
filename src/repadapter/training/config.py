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

from repadapter.config import RepAdapterConfig
from repadapter.errors import RepAdapterError, first_line
from repadapter.training.data.cache import CACHE_MODES
from repadapter.training.data.transforms import NORMALIZATIONS
from repadapter.training.data.video import SAMPLINGS as FRAME_SAMPLINGS

SCALE_CANDIDATES = (0.1, 0.5, 1.0, 5.0, 10.0)
AMP_MODES = ("none", "bf16", "fp16")
FSDP_DTYPES = ("float32", "bf16")
AUGMENTS = ("none", "fewshot")
SELECTIONS = ("val", "test", "none")
SEG_EVALS = ("resize", "slide")
MAX_LR = 1e30
# The --method and --task names: the keys of `training.methods.METHODS` and of the task-kind
# table in `training.tasks`, in their order (tests/training/test_config.py holds them equal). A
# config checks its names against these, so that it imports neither registry: the registries
# import the config.
METHOD_NAMES = (
    "repadapter",
    "linear",
    "full",
    "bitfit",
    "lora",
    "ssf",
    "fact-tt",
    "adapter",
    "adaptformer",
    "vpt-deep",
)
TASK_NAMES = ("classification", "segmentation", "video")


def check_name(what: str, name: str, names: tuple[str, ...]) -> str:
    """``name`` if it is one of ``names``, else the error naming the ``what`` (method, task) and
    the known ones."""
    if name not in names:
        raise RepAdapterError(f"unknown {what} {name!r}; {what}s: {', '.join(names)}")
    return name


@dataclass(frozen=True)
class TrainConfig:
    """A training run. Defaults: the paper's VTAB-1k recipe for ViT-B/16 (ImageNet-21k).

    Two names keep their meaning from the command line and the saved ``config.yaml``: ``task`` is
    the task *kind* (``--task``, one of `TASK_NAMES`; the data set is the run's data, not part of
    the config), and ``dim`` is the method's size: RepAdapter's and the bottleneck adapters' hidden
    width, LoRA's and FacT-TT's rank, VPT-Deep's prompt count per block. ``scale`` is how a run
    picks the scale s that a scaled method uses (`RepAdapterConfig.scale`, a number): ``"auto"``
    searches `SCALE_CANDIDATES`, ``"paper"`` takes the official VTAB-1k value, and a number
    (kept as its text, e.g. ``"0.5"``) is that s; the run's summary records the s it chose.
    """

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
    # sharded training under torchrun (training/fsdp.py), and the dtype its blocks compute in
    fsdp: bool = False
    fsdp_dtype: str = "float32"
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
        placement_error = RepAdapterConfig.placement_error(self.placement)
        checks = [
            (
                all(math.isfinite(getattr(self, f.name)) for f in fields(self) if f.type == "float"),
                "every number must be finite",
            ),
            (self.frame_sampling in FRAME_SAMPLINGS, f"frame_sampling must be one of {FRAME_SAMPLINGS}"),
            (self.seg_eval in SEG_EVALS, f"seg_eval must be one of {SEG_EVALS}"),
            (self.num_frames is None or self.num_frames >= 1, "num_frames must be positive"),
            (self.seg_levels >= 1, "seg_levels must be positive"),
            (placement_error is None, str(placement_error)),
            (self.normalization in NORMALIZATIONS, f"normalization must be one of {NORMALIZATIONS}"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}"),
            (self.fsdp_dtype in FSDP_DTYPES, f"fsdp_dtype must be one of {FSDP_DTYPES}"),
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
            (
                max(self.lr, self.min_lr, self.warmup_lr) <= MAX_LR,
                f"learning rates must be at most {MAX_LR:g} (float32 training overflows past it)",
            ),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.drop_path < 1, "drop_path must be in [0, 1)"),
            (self.workers >= 0, "workers must be >= 0"),
            (self.dim >= 1 and self.groups >= 1, "dim and groups must be positive"),
            (self.img_size is None or self.img_size >= 1, "img_size must be positive"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise RepAdapterError(f"bad training config: {message}")
        check_name("method", self.method, METHOD_NAMES)
        check_name("task", self.task, TASK_NAMES)
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


# A setting's annotation and what a YAML value for it may be.
_VALUE_KINDS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
}
_KIND_WORDS = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false"}


def _checked_value(name: str, value: Any, annotation: str, where: str) -> Any:
    """``value`` for the setting ``name``, or an error naming ``where`` it came from."""
    optional = annotation.endswith(" | None")
    kind = annotation.removesuffix(" | None")
    if value is None and optional:
        return value
    if kind == "float" and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if name == "scale" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value  # a number, kept as its string by resolve_config
    if isinstance(value, _VALUE_KINDS[kind]) and (kind == "bool" or not isinstance(value, bool)):
        return value
    words = _KIND_WORDS[kind] + (" or null" if optional else "")
    raise RepAdapterError(f"{where}: {name} must be {words}, got {value!r}")


def read_settings(path: str | os.PathLike[str], what: str = "config file") -> dict[str, Any]:
    """The settings of a YAML file of ``setting: value`` lines, each checked for its name and
    type; any problem is a one-line error naming the file (and line, for broken YAML)."""
    path = Path(path)
    if not path.is_file():
        raise RepAdapterError(f"{what} {path} does not exist (or is not a file)")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise RepAdapterError(
            f"{what} {path} is not valid YAML: {err.problem or err.context}{at}; "
            "write one 'setting: value' per line"
        ) from err
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise RepAdapterError(f"{what} {path} is not valid YAML: {first_line(err)}") from err
    if not isinstance(loaded, dict):
        raise RepAdapterError(f"{what} {path} must hold a mapping of setting: value")
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = set(loaded) - set(known)
    if unknown:
        raise RepAdapterError(
            f"{what} {path} has unknown settings {sorted(map(str, unknown))}; known: {sorted(known)}"
        )
    return {
        name: _checked_value(name, value, str(known[name].type), f"{what} {path}")
        for name, value in loaded.items()
    }


def given_settings(yaml_file: str | os.PathLike[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """The settings a command gives: ``yaml_file``'s, then the ``overrides`` that are not None."""
    values = {} if yaml_file is None else read_settings(yaml_file)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def config_of(values: dict[str, Any]) -> TrainConfig:
    """The defaults with ``values`` (checked settings) put in."""
    if "scale" in values:
        values = {**values, "scale": str(values["scale"])}
    try:
        return replace(TrainConfig(), **values)
    except TypeError as err:
        raise RepAdapterError(f"bad training config: {err}") from err


def resolve_config(yaml_file: str | os.PathLike[str] | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then ``yaml_file``, then the ``overrides`` that are not None."""
    return config_of(given_settings(yaml_file, **overrides))
