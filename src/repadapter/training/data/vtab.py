"""VTAB-1k in the layout the PETL community uses (NOAH, the official RepAdapter code).

``<root>/<task>/`` holds the images and four lists of "relative/path label" lines:
``train800.txt``, ``val200.txt``, ``train800val200.txt`` and ``test.txt``. A root with a
``suite.json`` manifest (the offline suite, `repadapter data build offline`) names its own
tasks, classes and groups there; any other root is VTAB-1k.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repadapter.errors import RepAdapterError
from repadapter.training.data.lists import TaskData, check_samples, read_list, require_dir


@dataclass(frozen=True)
class VtabTask:
    name: str
    num_classes: int
    group: str


GROUPS = ("natural", "specialized", "structured")

VTAB_TASKS: dict[str, VtabTask] = {
    t.name: t
    for t in [
        VtabTask("cifar", 100, "natural"),
        VtabTask("caltech101", 102, "natural"),
        VtabTask("dtd", 47, "natural"),
        VtabTask("oxford_flowers102", 102, "natural"),
        VtabTask("oxford_iiit_pet", 37, "natural"),
        VtabTask("svhn", 10, "natural"),
        VtabTask("sun397", 397, "natural"),
        VtabTask("patch_camelyon", 2, "specialized"),
        VtabTask("eurosat", 10, "specialized"),
        VtabTask("resisc45", 45, "specialized"),
        VtabTask("diabetic_retinopathy", 5, "specialized"),
        VtabTask("clevr_count", 8, "structured"),
        VtabTask("clevr_dist", 6, "structured"),
        VtabTask("dmlab", 6, "structured"),
        VtabTask("kitti", 4, "structured"),
        VtabTask("dsprites_loc", 16, "structured"),
        VtabTask("dsprites_ori", 16, "structured"),
        VtabTask("smallnorb_azi", 18, "structured"),
        VtabTask("smallnorb_ele", 9, "structured"),
    ]
}

SPLIT_FILES = {
    "train": "train800.txt",
    "val": "val200.txt",
    "trainval": "train800val200.txt",
    "test": "test.txt",
}

# The official RepAdapter configs' per-task scale s, as (placement "block", placement "attn").
PAPER_SCALES: dict[str, tuple[float, float]] = {
    "cifar": (0.1, 0.1),
    "caltech101": (5, 10),
    "dtd": (1, 0.1),
    "oxford_flowers102": (0.5, 0.5),
    "oxford_iiit_pet": (0.1, 0.5),
    "svhn": (10, 10),
    "sun397": (0.1, 0.1),
    "patch_camelyon": (1, 0.5),
    "eurosat": (1, 5),
    "resisc45": (5, 0.1),
    "diabetic_retinopathy": (0.1, 0.5),
    "clevr_count": (0.5, 1),
    "clevr_dist": (0.1, 0.1),
    "dmlab": (5, 5),
    "kitti": (5, 1),
    "dsprites_loc": (5, 10),
    "dsprites_ori": (0.1, 5),
    "smallnorb_azi": (10, 10),
    "smallnorb_ele": (1, 1),
}

LAYOUT = "<root>/<task>/{train800,val200,train800val200,test}.txt plus the images they list"
SUITE_MANIFEST = "suite.json"
SUITE_FORMAT = "repadapter-offline-suite/1"


def read_suite_manifest(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The offline-suite manifest at ``root``, or None where ``root`` has none."""
    path = Path(root) / SUITE_MANIFEST
    if not path.is_file():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != SUITE_FORMAT:
        raise RepAdapterError(
            f"{path} is not a {SUITE_FORMAT} manifest; rebuild it with `repadapter data build offline`"
        )
    return manifest


def suite_tasks(root: str | os.PathLike[str]) -> dict[str, VtabTask]:
    """The tasks of the suite at ``root``, in order: its manifest's, or VTAB-1k's."""
    manifest = read_suite_manifest(root)
    if manifest is None:
        return VTAB_TASKS
    return {
        name: VtabTask(name, entry["num_classes"], entry["group"])
        for name, entry in manifest["tasks"].items()
    }


def chosen_tasks(root: Path, tasks: list[str] | None) -> list[str]:
    """``tasks`` checked against the suite at ``root``, or every suite task found there."""
    suite = suite_tasks(root)
    names = tasks or [t for t in suite if (root / t).is_dir()]
    if not names:
        raise RepAdapterError(f"{root} holds none of the suite's task folders ({', '.join(suite)})")
    unknown = [name for name in names if name not in suite]
    if unknown:
        raise RepAdapterError(f"unknown task {unknown[0]!r} in {root}; tasks: {', '.join(suite)}")
    return names


def vtab_task(name: str) -> VtabTask:
    if name not in VTAB_TASKS:
        raise RepAdapterError(f"unknown VTAB-1k task {name!r}; tasks: {', '.join(VTAB_TASKS)}")
    return VTAB_TASKS[name]


def paper_scale(task: str, placement: str) -> float:
    """The official config's scale for ``task`` and ``placement``."""
    block, attn = PAPER_SCALES[vtab_task(task).name]
    return float(block if placement == "block" else attn)


def load_vtab_task(task_dir: str | os.PathLike[str]) -> TaskData:
    """Read one task folder; its name (the folder's name) fixes the class count and group, in
    VTAB-1k or in the suite manifest beside it."""
    folder = require_dir(task_dir, "VTAB-1k task", LAYOUT)
    tasks = suite_tasks(folder.parent)
    if folder.name not in tasks:
        raise RepAdapterError(f"unknown task {folder.name!r} in {folder.parent}; tasks: {', '.join(tasks)}")
    task = tasks[folder.name]
    splits = {
        split: read_list(folder / file, folder, task.num_classes, check=False)
        for split, file in SPLIT_FILES.items()
    }
    check_samples([sample for samples in splits.values() for sample in samples], task.num_classes)
    return TaskData(task.name, task.num_classes, splits, group=task.group)
