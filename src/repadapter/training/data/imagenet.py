"""ImageNet-1k and its test-only variants, for the paper's domain-generalization protocol
(adapt on ImageNet with K shots per class, test on ImageNet-V2, -Sketch, -A and -R).

Every kind labels images with ImageNet-1k's class indices, in the order of timm's synset list:

- ``imagenet:<root>``: ILSVRC-2012 as usually unpacked, ``train/<wnid>/*.JPEG`` and
  ``val/<wnid>/*.JPEG``; ``shots`` images per class are drawn from train (seeded, each class on
  its own, so a class's draw does not depend on which other classes are present), or all of
  them; val is the test split.
- ``imagenet-v2:<root>``: folders ``0`` .. ``999`` named by class index (test only).
- ``imagenet-sketch:<root>``: ``<wnid>/`` folders (test only).
- ``imagenet-a:<root>``, ``imagenet-r:<root>``: ``<wnid>/`` folders of 200 of the 1000 classes
  (test only); the 1000-way logits are restricted to those 200 before the argmax, as the
  datasets' authors score them (`TaskData.scored_classes`).

The synset and index lists are the ones timm ships (``timm/data/_info``).
"""

from __future__ import annotations

import functools
import os
import pkgutil
import warnings
from collections.abc import Callable
from pathlib import Path

from repadapter.errors import RepAdapterError
from repadapter.training.data.folders import IMAGE_SUFFIXES
from repadapter.training.data.lists import Sample, TaskData, check_samples, draw_shots, require_dir

# The test-only kinds: each one's class-folder naming and the layout shown in errors.
TEST_KINDS = {
    "imagenet-v2": "<root>/<class index 0..999>/<image>",
    "imagenet-sketch": "<root>/<wnid>/<image>",
    "imagenet-a": "<root>/<wnid>/<image> (200 of the ImageNet-1k classes)",
    "imagenet-r": "<root>/<wnid>/<image> (200 of the ImageNet-1k classes)",
}
TRAIN_LAYOUT = "<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG"


def _timm_list(name: str) -> list[str]:
    """The lines of timm's packaged list ``timm/data/_info/<name>``."""
    data = pkgutil.get_data("timm.data", f"_info/{name}")
    if data is None:
        raise RepAdapterError(f"the installed timm does not ship data/_info/{name}; install timm >= 1.0")
    return data.decode("utf-8").split()


@functools.cache
def imagenet_synsets() -> tuple[str, ...]:
    """ImageNet-1k's 1000 WordNet ids, in class-index order."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


@functools.cache
def subset_classes(kind: str) -> tuple[int, ...]:
    """The ImageNet-1k indices of the 200 classes of ``imagenet-a`` or ``imagenet-r``, from
    timm's index list, checked against its synset list for the same classes."""
    stem = kind.replace("-", "_")
    indices = tuple(int(i) for i in _timm_list(f"{stem}_indices.txt"))
    synsets = imagenet_synsets()
    if [synsets[i] for i in indices] != _timm_list(f"{stem}_synsets.txt"):
        raise RepAdapterError(f"timm's {stem}_indices.txt and {stem}_synsets.txt disagree; reinstall timm")
    return indices


def _images(folder: Path) -> list[Path]:
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise RepAdapterError(f"{folder} holds no images")
    return images


def _class_folders(folder: Path, label_of: Callable[[str], int], layout: str) -> dict[int, Path]:
    """``{class index: folder}`` for the class folders of ``folder``, each named and labelled by
    ``label_of`` (which refuses a name that is not a class of the kind)."""
    found = {label_of(p.name): p for p in sorted(folder.iterdir()) if p.is_dir()}
    if not found:
        raise RepAdapterError(f"{folder} holds no class folders; expected layout: {layout}")
    return found


def _wnid_label(allowed: tuple[int, ...], where: Path, what: str) -> Callable[[str], int]:
    index = {wnid: i for i, wnid in enumerate(imagenet_synsets())}
    allowed_set = set(allowed)

    def label_of(name: str) -> int:
        label = index.get(name)
        if label is None or label not in allowed_set:
            raise RepAdapterError(
                f"{where / name}: {name!r} is not the WordNet id of one of the {len(allowed)} {what} "
                "classes; "
                f"class folders are named by wnid (e.g. {imagenet_synsets()[allowed[0]]})"
            )
        return label

    return label_of


def _index_label(where: Path) -> Callable[[str], int]:
    def label_of(name: str) -> int:
        if not name.isdigit() or int(name) >= 1000 or name != str(int(name)):
            raise RepAdapterError(
                f"{where / name}: ImageNet-V2 class folders are named by class index 0 .. 999, got {name!r}"
            )
        return int(name)

    return label_of


def _note_coverage(folder: Path, present: int, expected: int) -> None:
    if present < expected:
        warnings.warn(
            f"{folder} holds {present} of the {expected} classes of its data set (a partial copy?)",
            stacklevel=3,
        )


def _all_samples(folders: dict[int, Path]) -> list[Sample]:
    return [
        Sample(image, label, str(image)) for label, folder in folders.items() for image in _images(folder)
    ]


def load_imagenet(
    root: str | os.PathLike[str], shots: int | None, seed: int, split: str | None = None
) -> TaskData:
    """ILSVRC-2012 under ``root``: train (``shots`` images per class drawn with ``seed``, or all
    when ``shots`` is None) and val as the test split. ``split`` names the one split the caller
    needs (eval): the other is then neither listed nor checked."""
    if shots is not None and shots < 1:
        raise RepAdapterError(f"--shots is the number of training images per class, at least 1; got {shots}")
    if seed < 0:
        raise RepAdapterError(f"--fewshot-seed must be 0 or more; got {seed}")
    root = require_dir(root, "ImageNet", TRAIN_LAYOUT)
    classes = tuple(range(1000))
    splits: dict[str, list[Sample]] = {}
    if split != "test":
        train_dir = require_dir(root / "train", "ImageNet train", TRAIN_LAYOUT)
        folders = _class_folders(train_dir, _wnid_label(classes, train_dir, "ImageNet-1k"), TRAIN_LAYOUT)
        _note_coverage(train_dir, len(folders), len(classes))
        train = []
        for label, folder in folders.items():
            images = _images(folder)
            if shots is not None:
                if len(images) < shots:
                    raise RepAdapterError(
                        f"{folder} holds {len(images)} images, fewer than --shots {shots}; "
                        "give fewer shots or the full class folder"
                    )
                images = draw_shots(images, shots, seed, folder.name)
            train += [Sample(image, label, str(image)) for image in images]
        splits["train"] = splits["trainval"] = train
    if split in (None, "test"):
        val_dir = require_dir(root / "val", "ImageNet val", TRAIN_LAYOUT)
        folders = _class_folders(val_dir, _wnid_label(classes, val_dir, "ImageNet-1k"), TRAIN_LAYOUT)
        _note_coverage(val_dir, len(folders), len(classes))
        splits["test"] = _all_samples(folders)
    check_samples([sample for samples in splits.values() for sample in samples], len(classes))
    name = "imagenet" if shots is None else f"imagenet_{shots}shot_seed{seed}"
    return TaskData(name, len(classes), splits, class_names=imagenet_synsets())


def load_imagenet_variant(kind: str, root: str | os.PathLike[str]) -> TaskData:
    """One of the test-only kinds of `TEST_KINDS` under ``root``: its test split, labelled
    with ImageNet-1k indices; for imagenet-a and -r the 200 classes it is scored among."""
    layout = TEST_KINDS[kind]
    folder = require_dir(root, kind, layout)
    scored: tuple[int, ...] = ()
    if kind == "imagenet-v2":
        label_of = _index_label(folder)
        expected = 1000
    elif kind == "imagenet-sketch":
        label_of = _wnid_label(tuple(range(1000)), folder, "ImageNet-1k")
        expected = 1000
    else:
        scored = subset_classes(kind)
        label_of = _wnid_label(scored, folder, "ImageNet-" + kind[-1].upper())
        expected = len(scored)
    folders = _class_folders(folder, label_of, layout)
    _note_coverage(folder, len(folders), expected)
    test = _all_samples(folders)
    check_samples(test, 1000)
    return TaskData(
        kind.replace("-", "_"),
        1000,
        {"test": test},
        class_names=imagenet_synsets(),
        scored_classes=scored,
    )
