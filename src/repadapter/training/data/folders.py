"""Users' own data: an ImageFolder tree or CSV files of "path,label".

ImageFolder: ``<root>/<split>/<class name>/<image>`` for split in train, val (optional), test.
CSV: ``<root>/<split>.csv`` with a header ``path,label``; paths are relative to ``<root>``.
Labels are class ids (integers 0, 1, 2, ...) or class names (numbered in sorted order), the same
kind in every file; every class must have training rows, so ids run from 0 without a gap and a
val or test label is one the train split has. Anything else is an error naming file and line.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from PIL import Image

from repadapter.errors import RepAdapterError
from repadapter.training.data.lists import Sample, TaskData, check_samples, require_dir

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _finish(name: str, splits: dict[str, list[Sample]], class_names: list[str], root: Path) -> TaskData:
    if "train" not in splits:
        raise RepAdapterError(
            f"{root} has no train split; expected {root}/train (folders) or {root}/train.csv"
        )
    check_samples([sample for samples in splits.values() for sample in samples], len(class_names))
    if "val" in splits:
        splits["trainval"] = splits["train"] + splits["val"]
    return TaskData(name, len(class_names), splits, class_names=tuple(class_names))


def load_image_folder(root: str | os.PathLike[str]) -> TaskData:
    """Read ``<root>/{train,val,test}/<class>/<image>``; classes come from ``train``."""
    root = require_dir(root, "ImageFolder", "<root>/{train,val,test}/<class name>/<image>")
    train_dir = require_dir(root / "train", "ImageFolder train", "<root>/train/<class name>/<image>")
    class_names = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not class_names:
        raise RepAdapterError(f"{train_dir} has no class folders")
    splits = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        samples = []
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if class_dir.name not in class_names:
                raise RepAdapterError(f"{class_dir}: class {class_dir.name!r} is not among the train classes")
            label = class_names.index(class_dir.name)
            for image in sorted(class_dir.rglob("*")):
                if image.suffix.lower() in IMAGE_SUFFIXES:
                    samples.append(Sample(image, label, str(image)))
        if not samples:
            raise RepAdapterError(f"{split_dir} holds no images")
        splits[split] = samples
    return _finish(root.name, splits, class_names, root)


def _is_int(label: str) -> bool:
    return label.lstrip("+-").isdigit()


def load_csv_folder(root: str | os.PathLike[str]) -> TaskData:
    """Read ``<root>/{train,val,test}.csv`` ("path,label" rows, paths relative to root)."""
    root = require_dir(root, "CSV data", "<root>/{train,val,test}.csv with rows 'path,label'")
    rows: dict[str, list[tuple[str, str, str]]] = {}
    for split in SPLITS:
        file = root / f"{split}.csv"
        if not file.is_file():
            continue
        with open(file, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header] != ["path", "label"]:
                raise RepAdapterError(f"{file}:1: expected the header 'path,label', got {header!r}")
            rows[split] = []
            for number, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise RepAdapterError(f"{file}:{number}: expected 'path,label', got {','.join(row)!r}")
                rows[split].append((row[0].strip(), row[1].strip(), f"{file}:{number}"))
    if not rows.get("train"):
        raise RepAdapterError(
            f"{root} has no training rows; expected {root}/train.csv with rows 'path,label'"
        )
    ids = {origin: label for split_rows in rows.values() for _, label, origin in split_rows if _is_int(label)}
    names = {
        origin: label for split_rows in rows.values() for _, label, origin in split_rows if not _is_int(label)
    }
    if ids and names:
        (id_at, an_id), (name_at, a_name) = next(iter(ids.items())), next(iter(names.items()))
        raise RepAdapterError(
            f"{name_at}: label {a_name!r} is a class name but {id_at} gives the class id {an_id}; "
            "labels are either class ids (0, 1, 2, ...) or class names, the same in every file"
        )
    for origin, label in ids.items():
        if int(label) < 0:
            raise RepAdapterError(f"{origin}: label {label} is not a class id; class ids are 0, 1, 2, ...")
    trained = {label for _, label, _ in rows["train"]}
    if ids:
        count = max(int(label) for label in trained) + 1
        unseen = sorted(set(range(count)) - {int(label) for label in trained})
        if unseen:
            raise RepAdapterError(
                f"{root / 'train.csv'}: no training row has class id {unseen[0]}, though ids run up to "
                f"{count - 1}; every class id from 0 up needs training images"
            )
        class_names = [str(i) for i in range(count)]
    else:
        class_names = sorted(trained)
    known = set(class_names)
    for split_rows in rows.values():
        for _, label, origin in split_rows:
            if (str(int(label)) if ids else label) not in known:
                raise RepAdapterError(
                    f"{origin}: class {label!r} has no training row in {root / 'train.csv'}; "
                    "every class needs training images (the classifier learns only the classes it sees)"
                )
    splits = {
        split: [
            Sample(root / path, int(label) if ids else class_names.index(label), origin)
            for path, label, origin in split_rows
        ]
        for split, split_rows in rows.items()
    }
    return _finish(root.name, splits, class_names, root)
