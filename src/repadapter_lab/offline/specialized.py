"""Specialised tasks: scientific and medical imagery, faces, typefaces."""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

from repadapter_lab.offline.base import SIZE, Example, build_by_label
from repadapter_lab.offline.natural import cached_font, render_text
from repadapter_lab.sources import font_families, skimage_image

SCIENCE_IMAGES = ("immunohistochemistry", "retina", "hubble_deep_field", "moon", "cell")
SPLIT_BANDS = {"train": (0.0, 0.6), "val": (0.6, 0.75), "test": (0.75, 1.0)}


def science_patches(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """Patches of scikit-image's microscopy, fundus, telescope and lunar images; label = the
    source image. Each split crops a disjoint horizontal band of every image (train the top
    60%, val the next 15%, test the rest), so no pixel is shared across splits."""
    sources = [skimage_image(name) for name in SCIENCE_IMAGES]
    sources = [np.repeat(s[:, :, None], 3, axis=2) if s.ndim == 2 else s for s in sources]

    def render(label: int, rng: np.random.Generator, split: str) -> np.ndarray:
        image, (low, high) = sources[label], SPLIT_BANDS[split]
        top, bottom = int(low * image.shape[0]), int(high * image.shape[0])
        crop = int(min(bottom - top, image.shape[1]) * rng.uniform(0.3, 1.0))
        y0 = int(rng.integers(top, bottom - crop + 1))
        x0 = int(rng.integers(0, image.shape[1] - crop + 1))
        patch = np.rot90(image[y0 : y0 + crop, x0 : x0 + crop], int(rng.integers(4)))
        return np.asarray(
            Image.fromarray(np.ascontiguousarray(patch)).resize((SIZE, SIZE), Image.Resampling.BOX)
        )

    return build_by_label(sizes, seed, len(sources), render)


LFW_SPLITS = {"train": range(0, 60), "val": range(60, 75), "test": range(75, 100)}


def lfw_faces(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """scikit-image's LFW subset: 100 faces and 100 non-faces (25 x 25 grey); label 1 = face.
    Only 200 images exist, so a split holds at most 120 / 30 / 50 distinct ones (60 / 15 / 25
    per class); larger sizes repeat them. Half the images are mirrored."""
    from skimage import data

    images = np.round(data.lfw_subset() * 255).astype(np.uint8)  # 100 faces, then 100 non-faces
    queues: dict[tuple[str, int], list[int]] = {}

    def render(label: int, rng: np.random.Generator, split: str) -> np.ndarray:
        queue = queues.setdefault((split, label), [])
        if not queue:  # each of the split's images once, in random order, then again
            queue.extend(int(i) for i in rng.permutation(LFW_SPLITS[split]))
        image = images[queue.pop() + (0 if label == 1 else 100)]
        return image[:, ::-1].copy() if rng.random() < 0.5 else image

    return build_by_label(sizes, seed, 2, render)


def font_id(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """Typeface identification: a random 2-4 letter string in a random style (regular, bold,
    italic) of one of six families (DejaVu Sans/Serif/Sans Mono, FreeSans/Serif/Mono), black
    on white with slight rotation; label = the family."""
    families = font_families()
    names = sorted(families)
    cache: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}
    letters = string.ascii_letters

    def render(label: int, rng: np.random.Generator, split: str) -> np.ndarray:
        files = families[names[label]]
        path, size = files[int(rng.integers(len(files)))], int(rng.integers(18, 26))
        text = "".join(letters[int(i)] for i in rng.integers(len(letters), size=int(rng.integers(2, 5))))
        ink = int(rng.integers(0, 80))
        canvas = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
        render_text(text, cached_font(path, size, cache), (ink, ink, ink), canvas, (SIZE / 2, SIZE / 2))
        rotated = canvas.rotate(
            float(rng.uniform(-8, 8)), Image.Resampling.BICUBIC, fillcolor=(255, 255, 255)
        )
        return np.asarray(rotated)

    return build_by_label(sizes, seed, len(names), render)
