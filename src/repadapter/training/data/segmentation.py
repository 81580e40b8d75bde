"""Segmentation data: ADE20K as released, a generic image/mask folder, and the dataset that serves them.

ADE20K (``ADEChallengeData2016``): ``images/{training,validation}/<stem>.jpg`` with
``annotations/{training,validation}/<stem>.png``; annotation 0 is "other" (ignored), 1..150 are
the classes, shifted to 0..149 (the reduce-zero-label convention). Splits: ``train`` (training),
``trainval`` (the same images: there is no val split) and ``test`` (validation).

Mask folder: ``<root>/{train,val,test}/images/<stem>.{png,jpg,jpeg}`` with
``<root>/{train,val,test}/masks/<stem>.png`` (pixel = class index, 255 = ignore) and
``<root>/classes.txt`` (one class name per line). ``val`` and ``test`` are optional;
``trainval`` = train + val when there is a val.

Every pair is checked before training: missing folders, an image without a mask or a mask
without an image, sizes that differ, masks that are not single-channel, values that are not
classes. Each problem is a `RepAdapterError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF  # noqa: N812

from repadapter.errors import RepAdapterError
from repadapter.training.data.lists import TaskData, decode_problem, require_dir

IGNORE = (
    255  # the value of `repadapter.training.tasks.base.IGNORE_INDEX` (kept here: data must not import tasks)
)
ADE20K_CLASSES = 150
ADE20K_LAYOUT = (
    "<root>/images/{training,validation}/<stem>.jpg and <root>/annotations/{training,validation}/<stem>.png "
    "(the ADEChallengeData2016 release)"
)
MASK_FOLDER_LAYOUT = (
    "<root>/classes.txt, <root>/{train,val,test}/images/<stem>.{png,jpg,jpeg} and "
    "<root>/{train,val,test}/masks/<stem>.png (mask pixel = class index, 255 = ignore)"
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_MODES = ("L", "P", "I", "I;16")


@dataclass(frozen=True)
class SegSample:
    """An image, its mask and where they were found. ``reduce_zero_label``: the mask's 0 is
    ignored and k is class k-1 (ADE20K's annotations)."""

    image: Path
    mask: Path
    origin: str
    reduce_zero_label: bool = False


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """The files of ``folder`` with one of ``suffixes``, by stem; two files with one stem are an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise RepAdapterError(
                f"{found[path.stem]} and {path} have the same stem, so a mask cannot tell which it "
                "belongs to; keep one"
            )
        found[path.stem] = path
    return found


def _pair(
    images_dir: Path, masks_dir: Path, image_suffixes: tuple[str, ...], zero_ignored: bool
) -> list[SegSample]:
    """Pair images with masks by stem; an unpaired file on either side is an error."""
    images, masks = _files(images_dir, image_suffixes), _files(masks_dir, (".png",))
    lone_images, lone_masks = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if lone_images:
        raise RepAdapterError(
            f"{images[lone_images[0]]} has no mask {masks_dir / (lone_images[0] + '.png')} "
            f"({len(lone_images)} image(s) without a mask); add the masks or remove the images"
        )
    if lone_masks:
        raise RepAdapterError(
            f"{masks[lone_masks[0]]} has no image of the same stem in {images_dir} "
            f"({len(lone_masks)} mask(s) without an image); add the images or remove the masks"
        )
    if not images:
        raise RepAdapterError(f"{images_dir} holds no images ({', '.join(image_suffixes)})")
    return [SegSample(images[s], masks[s], f"{images_dir.name}/{s}", zero_ignored) for s in sorted(images)]


def _check_one(sample: SegSample, num_classes: int, fix: str) -> str | None:
    """Why ``sample`` cannot be used, or None."""
    problem = decode_problem(sample.image)
    if problem:
        return problem
    with Image.open(sample.image) as image:
        size = image.size
    try:
        with Image.open(sample.mask) as mask:
            if mask.mode not in MASK_MODES:
                return (
                    f"{sample.mask} is a {mask.mode} image; a mask holds one class index per pixel: "
                    "save it as a single-channel (mode L or P) PNG"
                )
            if mask.size != size:
                return (
                    f"{sample.mask} is {mask.size[0]}x{mask.size[1]} but its image {sample.image} is "
                    f"{size[0]}x{size[1]}; a mask must have its image's size"
                )
            values = np.unique(np.asarray(mask))
    except (UnidentifiedImageError, OSError) as err:
        return f"{sample.mask} is not a readable PNG mask ({err})"
    top = num_classes if sample.reduce_zero_label else num_classes - 1
    bad = [int(v) for v in values if v > top and (sample.reduce_zero_label or v != IGNORE)]
    if bad:
        return f"{sample.mask} holds value {bad[0]}, which is not a class: {fix}"
    return None


def check_segmentation_samples(samples: Sequence[SegSample], num_classes: int, fix: str) -> None:
    """Decode every mask (in threads: PIL decodes without the GIL) and refuse the first bad pair."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for problem in pool.map(lambda s: _check_one(s, num_classes, fix), samples, chunksize=16):
            if problem:
                raise RepAdapterError(problem)


def _ade20k_class_names(root: Path) -> tuple[str, ...]:
    """Names from the release's ``objectInfo150.txt`` (Idx, Ratio, Train, Val, Name), if present."""
    info = root / "objectInfo150.txt"
    if not info.is_file():
        return ()
    rows = [line.split("\t") for line in info.read_text().splitlines()[1:] if line.strip()]
    names = {int(r[0]): r[-1].strip() for r in rows if len(r) >= 2 and r[0].strip().isdigit()}
    if sorted(names) != list(range(1, ADE20K_CLASSES + 1)):
        return ()
    return tuple(names[i] for i in range(1, ADE20K_CLASSES + 1))


def load_ade20k(root: str | os.PathLike[str]) -> TaskData:
    """ADE20K in its released layout (``root`` is ``ADEChallengeData2016`` or a folder holding it)."""
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir() and not (root / "images").is_dir():
        root = root / "ADEChallengeData2016"
    require_dir(root, "ADE20K", ADE20K_LAYOUT)
    fix = (
        f"ADE20K annotations hold 0 (other) and 1..{ADE20K_CLASSES}; use the ADEChallengeData2016 "
        "release's annotations (the full ADE20K index has thousands of classes)"
    )
    splits: dict[str, list[Any]] = {}
    for split, folder in (("train", "training"), ("test", "validation")):
        images = require_dir(root / "images" / folder, f"ADE20K {folder} images", ADE20K_LAYOUT)
        masks = require_dir(root / "annotations" / folder, f"ADE20K {folder} annotations", ADE20K_LAYOUT)
        samples = _pair(images, masks, (".jpg", ".jpeg", ".png"), zero_ignored=True)
        check_segmentation_samples(samples, ADE20K_CLASSES, fix)
        splits[split] = samples
    splits["trainval"] = splits["train"]
    return TaskData("ade20k", ADE20K_CLASSES, splits, class_names=_ade20k_class_names(root))


def load_mask_folder(root: str | os.PathLike[str]) -> TaskData:
    """A generic ``<root>/{train,val,test}/{images,masks}`` tree with ``<root>/classes.txt``."""
    root = require_dir(root, "segmentation", MASK_FOLDER_LAYOUT)
    classes_file = root / "classes.txt"
    if not classes_file.is_file():
        raise RepAdapterError(f"{classes_file} does not exist; expected layout: {MASK_FOLDER_LAYOUT}")
    names = tuple(line.strip() for line in classes_file.read_text().splitlines() if line.strip())
    if not names:
        raise RepAdapterError(f"{classes_file} names no class; write one class name per line")
    if len(names) > IGNORE:
        raise RepAdapterError(f"{classes_file} names {len(names)} classes; masks hold at most 255 (0..254)")
    if len(set(names)) != len(names):
        raise RepAdapterError(f"{classes_file} names a class twice; class names must be unique")
    fix = f"mask values are class indices 0..{len(names) - 1} (the lines of {classes_file}) or 255 (ignore)"
    require_dir(root / "train", "segmentation train", MASK_FOLDER_LAYOUT)
    splits: dict[str, list[Any]] = {}
    for split in ("train", "val", "test"):
        if split != "train" and not (root / split).exists():
            continue
        images = require_dir(root / split / "images", f"segmentation {split} images", MASK_FOLDER_LAYOUT)
        masks = require_dir(root / split / "masks", f"segmentation {split} masks", MASK_FOLDER_LAYOUT)
        samples = _pair(images, masks, IMAGE_SUFFIXES, zero_ignored=False)
        samples = [SegSample(s.image, s.mask, f"{split}/{s.origin}") for s in samples]
        check_segmentation_samples(samples, len(names), fix)
        splits[split] = samples
    if "val" in splits:
        splits["trainval"] = splits["train"] + splits["val"]
    return TaskData(root.name, len(names), splits, class_names=names)


# --- serving ----------------------------------------------------------------------------------


def read_mask(sample: SegSample) -> np.ndarray:
    """The mask of ``sample`` as int64 class indices, ``IGNORE`` where ignored."""
    with Image.open(sample.mask) as mask:
        values = np.asarray(mask).astype(np.int64)
    if sample.reduce_zero_label:
        values = np.where(values == 0, IGNORE, values - 1)
    return values


class SegmentationDataset(Dataset):
    """(image, mask) pairs: a normalised float (3, H, W) image and an int64 (H, W) mask.

    By default both are resized to the model's input size (``prep["input_size"]``), the image
    bicubic, the mask nearest. ``short_side=True`` (sliding-window evaluation) resizes the short
    side to the input size's short side and keeps the aspect ratio, so images differ in size:
    batch them with ``collate_fn`` (`collate_segmentation`, which pads, masks with the ignore
    value), or with batch size 1. ``train`` and ``flip``: a random horizontal flip of both, half of the time.
    """

    def __init__(
        self,
        samples: Sequence[SegSample],
        prep: dict[str, Any],
        train: bool,
        flip: bool = False,
        short_side: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.size = (int(prep["input_size"][0]), int(prep["input_size"][1]))
        self.mean, self.std = list(prep["mean"]), list(prep["std"])
        self.flip = train and flip
        self.short_side = short_side

    def __len__(self) -> int:
        return len(self.samples)

    @staticmethod
    def collate_fn(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """`collate_segmentation`: what a DataLoader over this dataset should batch with."""
        return collate_segmentation(batch)

    def _target_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) to resize to."""
        if not self.short_side:
            return self.size[1], self.size[0]
        side = min(self.size)
        scale = side / min(width, height)
        return max(side, round(width * scale)), max(side, round(height * scale))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        try:
            with Image.open(sample.image) as image:
                rgb = image.convert("RGB")
            values = read_mask(sample)
        except (UnidentifiedImageError, OSError) as err:
            raise RepAdapterError(
                f"{sample.origin}: cannot decode {sample.image} or {sample.mask} ({err})"
            ) from err
        if values.shape != (rgb.height, rgb.width):
            raise RepAdapterError(f"{sample.origin}: {sample.mask} does not have the size of {sample.image}")
        size = self._target_size(rgb.width, rgb.height)
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
        mask = Image.fromarray(values.astype(np.int32)).resize(size, Image.Resampling.NEAREST)
        x = TF.normalize(TF.to_tensor(rgb), self.mean, self.std)
        y = torch.from_numpy(np.asarray(mask).astype(np.int64))
        if self.flip and bool(torch.rand(()) < 0.5):
            x, y = x.flip(-1), y.flip(-1)
        return x, y


def collate_segmentation(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (image, mask) pairs, padding at the bottom and right to the largest of them: images
    with zeros (the mean colour), masks with the ignore value, so padding is never scored."""
    height = max(x.shape[-2] for x, _ in batch)
    width = max(x.shape[-1] for x, _ in batch)
    images = torch.zeros(len(batch), batch[0][0].shape[0], height, width, dtype=batch[0][0].dtype)
    masks = torch.full((len(batch), height, width), IGNORE, dtype=torch.int64)
    for i, (x, y) in enumerate(batch):
        images[i, :, : x.shape[-2], : x.shape[-1]] = x
        masks[i, : y.shape[-2], : y.shape[-1]] = y
    return images, masks
