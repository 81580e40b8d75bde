"""What every task builder of the offline suite returns, and how its images are drawn.

A builder is a function ``build(sizes, seed)`` that returns, for each split named in ``sizes``
(``train``, ``val``, ``test``), exactly that many ``(image, label)`` pairs: ``image`` a uint8
array, (H, W) grey or (H, W, 3) RGB. It draws all randomness from ``numpy.random.default_rng``
seeded with ``seed`` and the split, so the same call gives byte-identical images, and keeps the
splits apart (different source images, regions or random draws).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

Example = tuple[np.ndarray, int]
Builder = Callable[[Mapping[str, int], int], dict[str, list[Example]]]
Render = Callable[[int, np.random.Generator, str], np.ndarray]

SIZE = 64
"""Side of the generated images, in pixels (sources with their own size keep it)."""

SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The random stream of one split of one task: independent across splits."""
    return np.random.default_rng([seed, SPLIT_SEEDS[split]])


def balanced_labels(count: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` labels, as equal per class as possible, in random order."""
    labels = np.arange(count) % num_classes
    rng.shuffle(labels)
    return labels


def build_by_label(
    sizes: Mapping[str, int], seed: int, classes: int, render: Render
) -> dict[str, list[Example]]:
    """Balanced labels for each split, then one image per label, ``render(label, rng, split)``,
    drawn from the split's own random stream."""
    out: dict[str, list[Example]] = {}
    for split, count in sizes.items():
        rng = split_rng(seed, split)
        labels = balanced_labels(count, classes, rng)
        out[split] = [(render(int(label), rng, split), int(label)) for label in labels]
    return out
