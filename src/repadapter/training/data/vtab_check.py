"""`repadapter data check vtab`: is a VTAB-1k tree complete, and is it the same data as someone else's?

For each task of the suite (VTAB-1k's 19, or those of an offline-suite manifest) it reports
whether the folder is there; the size of each split list against what it should hold (VTAB-1k:
800 / 200 / 1000; the test size is reported, not checked, as mirrors differ); that
``train800val200.txt`` is exactly ``train800.txt`` plus ``val200.txt``; malformed lines and
labels out of range; per-split class counts; listed images that are missing or do not decode;
the image formats, modes and sizes. Fingerprints let two users compare trees: a task's is the
sha256 of its four lists, each with its lines stripped and sorted (so line order and line endings
do not matter), and optionally of the listed images' bytes; the tree's is the sha256 of the
tasks' fingerprints in task order.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from repadapter.training.data.vtab import SPLIT_FILES, read_suite_manifest, suite_tasks

VTAB_SIZES = {"train": 800, "val": 200, "trainval": 1000}


def _expected_sizes(root: Path, task: str) -> dict[str, int]:
    manifest = read_suite_manifest(root)
    if manifest is None:
        return dict(VTAB_SIZES)
    sizes = manifest["tasks"][task]["sizes"]
    return {**sizes, "trainval": sizes["train"] + sizes["val"]}


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]


def _image_facts(path: Path) -> tuple[str, str, tuple[int, int]]:
    """Format, mode and size of an image, after decoding every pixel (raises if it cannot)."""
    with Image.open(path) as image:
        image.load()
        return str(image.format), image.mode, image.size


def check_task(root: Path, task: str, num_classes: int, image_bytes: bool, bar: Any) -> dict[str, Any]:
    """The report of one task folder: facts, fingerprint and the list of problems."""
    folder = root / task
    if not folder.is_dir():
        return {"present": False, "problems": [f"task folder {folder} is missing"]}
    problems: list[str] = []
    expected = _expected_sizes(root, task)
    lists: dict[str, list[str]] = {}
    for split, file in SPLIT_FILES.items():
        if (folder / file).is_file():
            lists[split] = _read_lines(folder / file)
        else:
            problems.append(f"{file} is missing")
    splits: dict[str, Any] = {}
    labelled: dict[str, int] = {}  # relative path -> label, over every list
    for split, lines in lists.items():
        counts: Counter[int] = Counter()
        for number, line in enumerate(lines, start=1):
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                problems.append(f"{SPLIT_FILES[split]}:{number}: not 'relative/path label': {line[:80]!r}")
                continue
            rel, label = parts[0], int(parts[1])
            if not 0 <= label < num_classes:
                problems.append(
                    f"{SPLIT_FILES[split]}:{number}: label {label} is out of range for {num_classes} classes"
                )
            if labelled.get(rel, label) != label:
                problems.append(f"{rel} has label {labelled[rel]} in one list and {label} in another")
            labelled[rel] = label
            counts[label] += 1
        size = len(lines)
        if split in expected and size != expected[split]:
            problems.append(f"{SPLIT_FILES[split]} lists {size} images, expected {expected[split]}")
        splits[split] = {
            "size": size,
            "classes_present": len(counts),
            "class_counts": {str(k): counts[k] for k in sorted(counts)},
        }
    if {"train", "val", "trainval"} <= set(lists) and sorted(lists["train"] + lists["val"]) != sorted(
        lists["trainval"]
    ):
        problems.append("train800val200.txt is not train800.txt plus val200.txt")

    formats: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    sizes: Counter[tuple[int, int]] = Counter()
    missing, undecodable = [], []
    content = hashlib.sha256()
    for rel in sorted(labelled):
        path = folder / rel
        bar.update(1)
        if not path.is_file():
            missing.append(rel)
            continue
        try:
            fmt, mode, shape = _image_facts(path)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            undecodable.append(rel)
            problems.append(f"{rel} does not decode ({err})")
            continue
        formats[fmt] += 1
        modes[mode] += 1
        sizes[shape] += 1
        if image_bytes:
            content.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    if missing:
        problems.append(f"{len(missing)} listed image(s) are missing, e.g. {missing[0]}")

    digest = hashlib.sha256()
    for split in sorted(lists):
        digest.update(f"{SPLIT_FILES[split]}\0".encode())
        digest.update("\n".join(sorted(lists[split])).encode() + b"\0")
    widths = [w for w, _ in sizes.elements()]
    heights = [h for _, h in sizes.elements()]
    report: dict[str, Any] = {
        "present": True,
        "num_classes": num_classes,
        "splits": splits,
        "images": {
            "listed": len(labelled),
            "missing": missing,
            "undecodable": undecodable,
            "formats": dict(formats.most_common()),
            "modes": dict(modes.most_common()),
            "width": [min(widths), max(widths)] if widths else None,
            "height": [min(heights), max(heights)] if heights else None,
            "most_common_size": list(sizes.most_common(1)[0][0]) if sizes else None,
            "distinct_sizes": len(sizes),
        },
        "lists_sha256": digest.hexdigest(),
        "problems": problems,
    }
    if image_bytes:
        report["images_sha256"] = content.hexdigest()
    return report


def check_vtab(
    root: str | os.PathLike[str],
    tasks: list[str] | None = None,
    image_bytes: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The report of every task of the suite at ``root`` (or of ``tasks``), with the tree's
    fingerprint and ``ok``: True when no task has a problem."""
    root = Path(root)
    suite = suite_tasks(root)
    names = tasks or list(suite)
    unknown = [t for t in names if t not in suite]
    report: dict[str, Any] = {"root": str(root), "tasks": {}}
    for name in unknown:
        report["tasks"][name] = {"present": False, "problems": [f"{name} is not a task of this suite"]}
    with tqdm(desc="check images", unit="img", disable=not progress) as bar:
        for name in names:
            if name in suite:
                report["tasks"][name] = check_task(root, name, suite[name].num_classes, image_bytes, bar)
    digest = hashlib.sha256()
    for name, entry in report["tasks"].items():
        digest.update(f"{name}\0{entry.get('lists_sha256', 'missing')}\0".encode())
    report["lists_sha256"] = digest.hexdigest()
    report["ok"] = not any(entry["problems"] for entry in report["tasks"].values())
    return report


def render_report(report: dict[str, Any]) -> str:
    """The report as text: one line per task, then its problems."""
    lines = [f"VTAB check of {report['root']}:"]
    for name, entry in report["tasks"].items():
        if not entry["present"]:
            lines.append(f"  {name:22s} MISSING")
        else:
            sizes = "/".join(str(entry["splits"].get(s, {}).get("size", "-")) for s in SPLIT_FILES)
            images = entry["images"]
            formats = ",".join(images["formats"]) or "-"
            size = "x".join(map(str, images["most_common_size"] or [])) or "-"
            classes = entry["splits"].get("trainval", {}).get("classes_present", 0)
            lines.append(
                f"  {name:22s} {'ok     ' if not entry['problems'] else 'PROBLEM'} "
                f"train/val/trainval/test {sizes}, {classes}/{entry['num_classes']} classes in trainval, "
                f"{formats} {size} ({images['distinct_sizes']} sizes), lists {entry['lists_sha256'][:12]}"
            )
        lines += [f"      - {problem}" for problem in entry["problems"]]
    bad = sum(1 for entry in report["tasks"].values() if entry["problems"])
    lines.append(f"fingerprint of the lists: {report['lists_sha256']}")
    lines.append("all tasks ok" if report["ok"] else f"{bad} task(s) with problems")
    return "\n".join(lines) + "\n"
