"""Data: VTAB-1k, the few-shot fine-grained layout, users' folders and CSVs, preprocessing."""

from __future__ import annotations

from repadapter.data.fewshot import load_fewshot_task
from repadapter.data.folders import load_csv_folder, load_image_folder
from repadapter.data.lists import ImageListDataset, Sample, TaskData
from repadapter.data.vtab import GROUPS, VTAB_TASKS, load_vtab_task, paper_scale
from repadapter.errors import RepAdapterError

DATA_KINDS = ("vtab", "fewshot", "folder", "csv")


def load_task(spec: str, shots: int = 1, fewshot_seed: int = 0) -> TaskData:
    """Load ``"kind:path"``: ``vtab:<root>/<task>``, ``fewshot:<root>/<dataset>``,
    ``folder:<root>`` (ImageFolder) or ``csv:<root>``."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in DATA_KINDS or not path:
        raise RepAdapterError(
            f"data spec {spec!r} is not 'kind:path' with kind in {DATA_KINDS}, "
            "e.g. vtab:/data/vtab-1k/cifar or folder:/data/my_images"
        )
    if kind == "vtab":
        return load_vtab_task(path)
    if kind == "fewshot":
        return load_fewshot_task(path, shots, fewshot_seed)
    if kind == "folder":
        return load_image_folder(path)
    return load_csv_folder(path)


__all__ = [
    "DATA_KINDS",
    "GROUPS",
    "VTAB_TASKS",
    "ImageListDataset",
    "Sample",
    "TaskData",
    "load_task",
    "load_vtab_task",
    "paper_scale",
]
