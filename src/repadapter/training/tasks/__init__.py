"""Kinds of task the engine trains: what each builds, serves and scores (see `TaskKind`).

Each kind lives in its own module, imported on first use, so classification runs never import
the segmentation or video code.
"""

from __future__ import annotations

import importlib

from repadapter.errors import RepAdapterError
from repadapter.training.tasks.base import IGNORE_INDEX, TaskKind, confusion, logits_of

_KINDS = {
    "classification": ("repadapter.training.tasks.classification", "CLASSIFICATION"),
    "segmentation": ("repadapter.training.tasks.segmentation", "SEGMENTATION"),
    "video": ("repadapter.training.tasks.video", "VIDEO"),
}


def task_kind(name: str) -> TaskKind:
    """The `TaskKind` called ``name`` (the ``--task`` value)."""
    if name not in _KINDS:
        raise RepAdapterError(f"unknown task {name!r}; tasks: {', '.join(_KINDS)}")
    module, attr = _KINDS[name]
    kind: TaskKind = getattr(importlib.import_module(module), attr)
    return kind


__all__ = ["IGNORE_INDEX", "TaskKind", "confusion", "logits_of", "task_kind"]
