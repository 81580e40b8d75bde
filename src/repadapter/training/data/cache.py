"""Images decoded and resized once, for recipes that draw no random augmentation.

The VTAB recipe feeds every epoch, and every scale of the search, the same resized image. So the
decoded, resized pixels (uint8, the output of PIL's resize) are kept, in memory or in a
memory-mapped file, and each later read only converts them to a normalised tensor. That last
step is the very one the uncached transform ends with, so the tensors are bit-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from repadapter.errors import RepAdapterError
from repadapter.files import atomic_write
from repadapter.training.data.lists import Sample
from repadapter.training.data.transforms import resize_transform, tensor_transform

CACHE_MODES = ("auto", "memory", "disk", "off")
CACHE_DIR = Path(os.environ.get("REPADAPTER_CACHE_DIR", Path.home() / ".cache" / "repadapter" / "images"))
# the share of physical memory that --data-cache auto fills before it goes to disk
MEMORY_SHARE = 0.25
# decoded lists kept in memory at once: a task's train, val, train+val and test splits
_KEPT = 4
_memory: OrderedDict[str, np.ndarray] = OrderedDict()


def fingerprint(samples: Sequence[Sample], prep: dict[str, Any]) -> str:
    """What the cached pixels depend on: each file's path, size and modification time, the
    resize settings."""
    digest = hashlib.sha256(json.dumps([prep["input_size"], prep["interpolation"]]).encode())
    for sample in samples:
        stat = sample.path.stat()
        digest.update(f"{sample.path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


class _Resized(Dataset):
    """(index, resized uint8 HWC pixels) of each sample: what the cache holds."""

    def __init__(self, samples: Sequence[Sample], prep: dict[str, Any]) -> None:
        self.samples, self.resize = list(samples), resize_transform(prep)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        sample = self.samples[index]
        try:
            with Image.open(sample.path) as image:
                return index, np.array(self.resize(image.convert("RGB")), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as err:
            raise RepAdapterError(f"{sample.origin}: cannot decode {sample.path} ({err})") from err


def _fill(store: np.ndarray, samples: Sequence[Sample], prep: dict[str, Any], workers: int) -> None:
    # a generator of its own: the loader's seed must not be drawn from the run's random state
    loader = DataLoader(
        _Resized(samples, prep), batch_size=None, num_workers=workers, generator=torch.Generator()
    )
    for index, pixels in loader:  # the loader hands the pixels over as a uint8 tensor
        store[index] = pixels


def _on_disk(key: str, samples: Sequence[Sample], prep: dict[str, Any], workers: int) -> np.ndarray:
    """The memory-mapped cache file of ``key``, written first (atomically) if it is not there."""
    height, width = prep["input_size"]
    shape = (len(samples), height, width, 3)
    path = CACHE_DIR / f"{key}.npy"
    try:
        found = np.load(path, mmap_mode="r")
        if found.shape == shape and found.dtype == np.uint8:
            return found
    except (OSError, ValueError):
        pass  # missing, or not a whole cache file: written anew
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _fill(store, samples, prep, workers)
        store.flush()

    atomic_write(path, write)
    return np.load(path, mmap_mode="r")


def _in_memory(key: str, samples: Sequence[Sample], prep: dict[str, Any], workers: int) -> np.ndarray:
    if key not in _memory:
        height, width = prep["input_size"]
        store = np.empty((len(samples), height, width, 3), dtype=np.uint8)
        _fill(store, samples, prep, workers)
        _memory[key] = store
        while len(_memory) > _KEPT:
            _memory.popitem(last=False)
    _memory.move_to_end(key)
    return _memory[key]


def _fits_in_memory(nbytes: int) -> bool:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return nbytes <= MEMORY_SHARE * physical


class CachedImages(Dataset):
    """``(normalised tensor, label)`` of each sample, as ``ImageListDataset`` with the model's
    evaluation transform gives them, read from pixels decoded and resized once."""

    def __init__(self, samples: Sequence[Sample], prep: dict[str, Any], mode: str = "auto", workers: int = 0):
        if mode not in CACHE_MODES or mode == "off":
            raise RepAdapterError(f"data cache mode must be one of {CACHE_MODES[:3]}, got {mode!r}")
        self.labels = [sample.label for sample in samples]
        self.to_tensor = tensor_transform(prep)
        height, width = prep["input_size"]
        key = fingerprint(samples, prep)
        if mode == "auto":
            mode = "memory" if _fits_in_memory(len(samples) * height * width * 3) else "disk"
        self.mode = mode
        self.pixels = (_in_memory if mode == "memory" else _on_disk)(key, samples, prep, workers)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.to_tensor(np.array(self.pixels[index])), self.labels[index]
