"""Raw image sources the package registries carry, read from where their packages install them.

Each reader returns uint8 arrays and says, when its package is missing, the command that
installs it. Nothing here downloads: the offline suite and the in-house pretraining are built
from these files alone.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from repadapter.errors import RepAdapterError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = "t-shirt/top trouser pullover dress coat sandal shirt sneaker bag ankle-boot".split()


def missing_source(what: str, install: str) -> RepAdapterError:
    return RepAdapterError(f"{what} is not installed on this machine; install it with: {install}")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An IDX file (the MNIST format, optionally gzipped) as a uint8 array."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RepAdapterError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise RepAdapterError(f"{path} is truncated: header says {shape}, holds {data.size} bytes")
    return data.reshape(shape)


def fashion_mnist(
    split: str, root: str | os.PathLike[str] = FASHION_MNIST_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``train`` (60k) or ``test`` (10k): images (N, 28, 28) and labels (N,)."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise RepAdapterError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}")
    root = Path(root)
    images, labels = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.is_file() or not labels.is_file():
        raise missing_source(f"Fashion-MNIST ({images})", "apt-get install dataset-fashion-mnist")
    x, y = read_idx(images), read_idx(labels)
    if x.shape[0] != y.shape[0]:
        raise RepAdapterError(f"{images} holds {x.shape[0]} images but {labels} {y.shape[0]} labels")
    return x, y
