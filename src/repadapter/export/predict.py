"""Predictions of a classifier on a folder of images, as a CSV file (`repadapter predict`).

Every image file under the folder (by extension, recursively, in sorted order) is decoded and
preprocessed as `repadapter eval` does; one that does not decode is reported and skipped, or
stops the run before anything is written, as the caller chooses.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from tqdm.auto import tqdm

from repadapter.errors import RepAdapterError
from repadapter.files import atomic_write
from repadapter.training.tasks.base import logits_of

BAD_IMAGE_CHOICES = ("skip", "error")


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image (most probable first) and their probabilities."""

    path: str
    classes: list[int]
    probabilities: list[float]


def image_suffixes() -> set[str]:
    """The file extensions Pillow can open."""
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files under ``folder`` (recursively, hidden ones left out), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise RepAdapterError(f"--images {root} is not a folder")
    suffixes = image_suffixes()
    found = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in suffixes
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not found:
        raise RepAdapterError(f"{root} holds no image files ({', '.join(sorted(suffixes)[:6])}, ...)")
    return found


def _decode(path: Path, transform: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    with Image.open(path) as image:
        return transform(image.convert("RGB"))


def predict_images(
    model: nn.Module,
    images: Sequence[Path],
    root: Path,
    transform: Callable[[Image.Image], torch.Tensor],
    topk: int,
    batch_size: int,
    device: torch.device,
    on_bad_image: str = "skip",
    progress: bool = True,
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Top-``topk`` softmax predictions of ``model`` (in eval mode) for each of ``images``, in
    batches, and the images that could not be decoded with the reason (``on_bad_image="skip"``);
    with ``"error"`` the first such image is an error."""
    if on_bad_image not in BAD_IMAGE_CHOICES:
        raise RepAdapterError(f"on_bad_image={on_bad_image!r}: use one of {BAD_IMAGE_CHOICES}")
    if topk < 1 or batch_size < 1:
        raise RepAdapterError(f"topk ({topk}) and batch size ({batch_size}) must be at least 1")
    predictions: list[Prediction] = []
    bad: list[tuple[str, str]] = []
    bar = tqdm(total=len(images), desc="predict", unit="img", disable=not progress)
    for start in range(0, len(images), batch_size):
        batch, names = [], []
        for path in images[start : start + batch_size]:
            name = path.relative_to(root).as_posix()
            try:
                batch.append(_decode(path, transform))
                names.append(name)
            except (UnidentifiedImageError, OSError, ValueError) as err:
                if on_bad_image == "error":
                    raise RepAdapterError(
                        f"{path} is not a readable image ({err}); remove it or pass --on-bad-image skip"
                    ) from err
                bad.append((name, str(err)))
        if batch:
            with torch.inference_mode():
                logits = logits_of(model(torch.stack(batch).to(device))).float()
            if topk > logits.shape[1]:
                raise RepAdapterError(f"--topk {topk} is more than the model's {logits.shape[1]} classes")
            probs, classes = logits.softmax(dim=1).topk(topk, dim=1)
            for name, c, p in zip(names, classes.tolist(), probs.tolist(), strict=True):
                predictions.append(Prediction(name, c, p))
        bar.update(len(images[start : start + batch_size]))
    bar.close()
    return predictions, bad


def write_predictions(
    out: str | os.PathLike[str], predictions: Sequence[Prediction], class_names: Sequence[str] = ()
) -> Path:
    """``out`` as CSV, atomically: ``path``, then per rank k ``class_k`` (index), ``name_k``
    (where ``class_names`` are given) and ``prob_k``."""
    topk = len(predictions[0].classes) if predictions else 0
    header = ["path"]
    for k in range(1, topk + 1):
        header += [f"class_{k}", *([f"name_{k}"] if class_names else []), f"prob_{k}"]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row in predictions:
                cells: list[object] = [row.path]
                for c, p in zip(row.classes, row.probabilities, strict=True):
                    cells += [c, *([class_names[c]] if class_names else []), f"{p:.6f}"]
                writer.writerow(cells)

    return atomic_write(out, write)


def read_class_names(path: str | os.PathLike[str], num_classes: int) -> list[str]:
    """One class name per line, in class-index order; there must be ``num_classes`` of them."""
    file = Path(path)
    if not file.is_file():
        raise RepAdapterError(f"class-names file {file} does not exist")
    names = [line.strip() for line in file.read_text().splitlines() if line.strip()]
    if len(names) != num_classes:
        raise RepAdapterError(
            f"{file} names {len(names)} classes but the model has {num_classes}; give one name per "
            "line, in class-index order"
        )
    return names
