"""Kinds of task the engine trains: what each builds, serves and scores (see `TaskKind`).

Each kind lives in its own module, imported on first use, so classification runs never import
the segmentation or video code.
"""

from __future__ import annotations

import importlib

from repadapter.training.config import check_name
from repadapter.training.tasks.base import IGNORE_INDEX, TaskKind, confusion, logits_of

TASK_KIND_MODULES = {
    "classification": ("repadapter.training.tasks.classification", "CLASSIFICATION"),
    "segmentation": ("repadapter.training.tasks.segmentation", "SEGMENTATION"),
    "video": ("repadapter.training.tasks.video", "VIDEO"),
}


def task_kind(name: str) -> TaskKind:
    """The `TaskKind` called ``name`` (the ``--task`` value)."""
    module, attr = TASK_KIND_MODULES[check_name("task", name, tuple(TASK_KIND_MODULES))]
    kind: TaskKind = getattr(importlib.import_module(module), attr)
    return kind


__all__ = ["IGNORE_INDEX", "TaskKind", "confusion", "logits_of", "task_kind"]
