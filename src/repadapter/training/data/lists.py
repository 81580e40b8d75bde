"""Labelled image lists: reading "relative/path label" files and serving the images.

Every problem is found before training starts (missing files, malformed lines, labels out
of range, files that are not images, images that do not decode to the end), and is reported
with the file and line it came from.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from repadapter.errors import RepAdapterError


@dataclass(frozen=True)
class Sample:
    """One labelled image and where it was listed (for error messages)."""

    path: Path
    label: int
    origin: str


@dataclass(frozen=True)
class TaskData:
    """A task: its splits (``train``, ``val``, ``trainval``, ``test``; some may be missing) and
    its number of classes. A split holds `Sample` images for classification, and its kind's own
    samples otherwise (image and mask pairs, clips). ``scored_classes``, when given, are the
    only classes the data holds (ImageNet-A and -R): predictions are the argmax over these."""

    name: str
    num_classes: int
    splits: dict[str, list[Any]]
    group: str | None = None
    class_names: tuple[str, ...] = field(default=())
    scored_classes: tuple[int, ...] = field(default=())

    def split(self, name: str) -> list[Any]:
        if name not in self.splits:
            raise RepAdapterError(f"task {self.name} has no {name!r} split; it has {sorted(self.splits)}")
        return self.splits[name]


T = TypeVar("T")


def draw_shots(items: Sequence[T], shots: int, seed: int, key: str) -> list[T]:
    """``shots`` of one class's ``items``, drawn with ``seed`` from that class's own random stream
    (named by ``key``, so a class's draw does not depend on which other classes are present),
    kept in the order of ``items``: the K-shot draw of ``--shots K --fewshot-seed S``."""
    picks = random.Random(f"{seed}/{key}").sample(range(len(items)), shots)
    return [items[i] for i in sorted(picks)]


def few_shot(task: TaskData, shots: int, seed: int) -> TaskData:
    """``task`` adapted on ``shots`` training images per class (`draw_shots`, each class keyed by
    its label, from the images sorted by path), drawn from train+val (train where it has no
    val): the K-shot split is ``train`` and ``trainval``, ``val`` is dropped and ``test`` kept."""
    if shots < 1:
        raise RepAdapterError(f"--shots is the number of training images per class, at least 1; got {shots}")
    if seed < 0:
        raise RepAdapterError(f"--fewshot-seed must be 0 or more; got {seed}")
    pool = task.split("trainval" if "trainval" in task.splits else "train")
    by_class: dict[int, list[Sample]] = {label: [] for label in range(task.num_classes)}
    for sample in sorted(pool, key=lambda s: str(s.path)):
        by_class[sample.label].append(sample)
    short = {label: len(samples) for label, samples in by_class.items() if len(samples) < shots}
    if short:
        shown = ", ".join(f"class {label}: {count}" for label, count in list(short.items())[:5])
        raise RepAdapterError(
            f"task {task.name} has fewer than --shots {shots} training images in {len(short)} class(es) "
            f"({shown}); give fewer shots"
        )
    train = [sample for label in by_class for sample in draw_shots(by_class[label], shots, seed, str(label))]
    return dataclasses.replace(
        task,
        name=f"{task.name}_{shots}shot_seed{seed}",
        splits={"train": train, "trainval": train, "test": task.split("test")},
    )


def list_lines(list_file: Path, what: str, items: str) -> list[tuple[str, str]]:
    """The non-blank lines of a list file, stripped, each with where it came from
    (``file:line``); an error naming the file when it is missing or lists no ``items``."""
    if not list_file.is_file():
        raise RepAdapterError(f"{what} {list_file} does not exist")
    lines = [
        (line.strip(), f"{list_file}:{number}")
        for number, line in enumerate(list_file.read_text().splitlines(), start=1)
        if line.strip()
    ]
    if not lines:
        raise RepAdapterError(f"{what} {list_file} has no {items}")
    return lines


def read_list(
    list_file: Path, image_root: Path, num_classes: int | None = None, check: bool = True
) -> list[Sample]:
    """Read a "relative/path label" list (paths relative to ``image_root``), checked
    (`check_samples`) unless ``check`` is False (for callers that check several lists at once)."""
    samples = []
    for line, where in list_lines(list_file, "split list", "samples"):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise RepAdapterError(f"{where}: expected 'relative/path label', got {line!r}")
        samples.append(Sample(image_root / parts[0], int(parts[1]), where))
    if check:
        check_samples(samples, num_classes)
    return samples


def decode_problem(path: Path) -> str | None:
    """Why the image at ``path`` cannot be used, or None: it is decoded to its last byte (a
    JPEG at 1/8 scale, which still reads every byte), so a truncated file is found here."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (1, 1))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        return f"{path} is not a readable image ({err})"
    return None


def check_samples(samples: Sequence[Sample], num_classes: int | None) -> None:
    """Refuse labels out of range and files that are missing or not images, naming each. Each
    image is decoded once (in threads: PIL decodes without the GIL), however many lists name it."""
    for sample in samples:
        if sample.label < 0 or (num_classes is not None and sample.label >= num_classes):
            raise RepAdapterError(
                f"{sample.origin}: label {sample.label} is out of range for {num_classes} classes"
            )
        if not sample.path.is_file():
            raise RepAdapterError(f"{sample.origin}: image {sample.path} does not exist")
    check_decodes((sample.path, sample.origin) for sample in samples)


def check_decodes(images: Iterable[tuple[Path, str]]) -> None:
    """Decode each image of ``(path, where it was listed)`` once (in threads: PIL decodes
    without the GIL), however often it is listed, and refuse the first that does not decode."""
    first: dict[Path, str] = {}
    for path, origin in images:
        first.setdefault(path, origin)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        problems = pool.map(decode_problem, first, chunksize=16)
        for origin, problem in zip(first.values(), problems, strict=True):
            if problem:
                pool.shutdown(cancel_futures=True)
                raise RepAdapterError(f"{origin}: {problem}")


class ImageListDataset(Dataset):
    """Images of a sample list, decoded to RGB and passed through ``transform``."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], Any]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = self.samples[index]
        try:
            with Image.open(sample.path) as image:
                rgb = image.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise RepAdapterError(f"{sample.origin}: cannot decode {sample.path} ({err})") from err
        return self.transform(rgb), sample.label


def require_dir(path: str | os.PathLike[str], what: str, layout: str) -> Path:
    """``path`` as a Path if it is a folder; else an error that shows the expected layout."""
    path = Path(path)
    if not path.is_dir():
        raise RepAdapterError(f"{what} folder {path} does not exist; expected layout: {layout}")
    return path
