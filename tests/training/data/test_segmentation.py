"""Segmentation data: ADE20K's released layout, the generic mask folder, the dataset and its checks."""

import numpy as np
import pytest
import torch
from PIL import Image

from repadapter import RepAdapterError
from repadapter.training.data.segmentation import (
    IGNORE,
    SegmentationDataset,
    SegSample,
    collate_segmentation,
    load_ade20k,
    load_mask_folder,
)
from repadapter.training.tasks.base import IGNORE_INDEX

PREP = {"input_size": [8, 8], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def _save_pair(images, masks, stem, mask, suffix=".jpg", image_size=None):
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    h, w = image_size or mask.shape
    rgb = np.random.default_rng(len(stem)).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / f"{stem}{suffix}")
    Image.fromarray(mask.astype(np.uint8)).save(masks / f"{stem}.png")


@pytest.fixture
def ade(tmp_path):
    """An ADEChallengeData2016 tree: 2 training and 1 validation pair of 6 x 8 px."""
    root = tmp_path / "ADEChallengeData2016"
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[:, 2:4], mask[:, 4:6], mask[:, 6:] = 1, 2, 150
    for split, prefix, count in (("training", "ADE_train", 2), ("validation", "ADE_val", 1)):
        for i in range(count):
            _save_pair(root / "images" / split, root / "annotations" / split, f"{prefix}_{i + 1:08d}", mask)
    rows = ["Idx\tRatio\tTrain\tVal\tName"] + [f"{i}\t0.1\t1\t1\tclass{i}, alias" for i in range(1, 151)]
    (root / "objectInfo150.txt").write_text("\n".join(rows) + "\n")
    return root


def test_ade20k_splits_classes_and_label_shift(ade):
    task = load_ade20k(ade.parent)  # the folder holding ADEChallengeData2016 works too
    assert task.num_classes == 150 and task.class_names[0] == "class1, alias" and len(task.class_names) == 150
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 2, "test": 1, "trainval": 2}
    assert "val" not in task.splits
    assert task.split("test")[0].image.name == "ADE_val_00000001.jpg"
    image, mask = SegmentationDataset(task.split("train"), {**PREP, "input_size": [6, 8]}, train=False)[0]
    assert image.shape == (3, 6, 8) and image.dtype == torch.float32 and mask.dtype == torch.int64
    assert mask[0].tolist() == [IGNORE_INDEX] * 2 + [0] * 2 + [1] * 2 + [149] * 2


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (
            lambda r: (r / "annotations" / "validation").rename(r / "gone"),
            "annotations.*does not exist.*layout",
        ),
        (
            lambda r: (r / "annotations/training/ADE_train_00000002.png").unlink(),
            "ADE_train_00000002.jpg has no mask",
        ),
        (
            lambda r: (r / "images/training/ADE_train_00000002.jpg").unlink(),
            "ADE_train_00000002.png has no image",
        ),
        (
            lambda r: Image.new("L", (5, 6)).save(r / "annotations/training/ADE_train_00000001.png"),
            "ADE_train_00000001.png is 5x6 but its image .* is 8x6",
        ),
        (
            lambda r: Image.new("L", (8, 6), 151).save(r / "annotations/validation/ADE_val_00000001.png"),
            "ADE_val_00000001.png holds value 151, which is not a class: ADE20K annotations hold 0",
        ),
        (
            lambda r: Image.new("RGB", (8, 6)).save(r / "annotations/training/ADE_train_00000001.png"),
            "is a RGB image.*single-channel",
        ),
    ],
)
def test_ade20k_bad_inputs_are_named(ade, damage, error):
    damage(ade)
    with pytest.raises(RepAdapterError, match=error):
        load_ade20k(ade)


def test_ade20k_missing_root_shows_the_layout(tmp_path):
    with pytest.raises(RepAdapterError, match="ADEChallengeData2016 release"):
        load_ade20k(tmp_path / "nowhere")


@pytest.fixture
def masks(tmp_path):
    """A mask folder with 3 classes: train (2 pairs, one png image), val (1 pair), test (1 pair)."""
    root = tmp_path / "seg"
    root.mkdir()
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    mask = np.array([[0, 1, 2, IGNORE], [2, 1, 0, 0]], dtype=np.uint8)
    for split, count in (("train", 2), ("val", 1), ("test", 1)):
        for i in range(count):
            suffix = ".png" if i else ".jpg"
            _save_pair(root / split / "images", root / split / "masks", f"{split}{i}", mask, suffix)
    return root


def test_mask_folder_keeps_labels_and_ignore(masks):
    task = load_mask_folder(masks)
    assert task.num_classes == 3 and task.class_names == ("sky", "road", "car")
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 2, "val": 1, "test": 1, "trainval": 3}
    assert task.split("train")[1].image.suffix == ".png"
    _, mask = SegmentationDataset(task.split("test"), {**PREP, "input_size": [2, 4]}, train=False)[0]
    assert mask.tolist() == [[0, 1, 2, IGNORE_INDEX], [2, 1, 0, 0]]
    assert IGNORE == IGNORE_INDEX


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda r: (r / "classes.txt").unlink(), "classes.txt does not exist; expected layout"),
        (lambda r: (r / "classes.txt").write_text("sky\nsky\n"), "a class twice"),
        (
            lambda r: (r / "train" / "masks").rename(r / "train" / "labels"),
            "train masks folder .* does not exist",
        ),
        (
            lambda r: Image.fromarray(np.full((2, 4), 3, np.uint8)).save(r / "val/masks/val0.png"),
            "val0.png holds value 3, which is not a class: mask values are class indices 0..2 .* or 255",
        ),
        (
            lambda r: Image.new("RGB", (4, 2)).save(r / "train/images/train0.png"),
            "train0.jpg and .*train0.png have the same stem",
        ),
        (lambda r: Image.new("L", (4, 2)).save(r / "test/masks/extra.png"), "extra.png has no image"),
    ],
)
def test_mask_folder_bad_inputs_are_named(masks, damage, error):
    damage(masks)
    with pytest.raises(RepAdapterError, match=error):
        load_mask_folder(masks)


def test_dataset_resizes_flips_and_keeps_aspect_for_sliding_windows(tmp_path):
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[:, 10:] = 1
    _save_pair(tmp_path / "images", tmp_path / "masks", "a", mask, ".png")
    sample = SegSample(tmp_path / "images/a.png", tmp_path / "masks/a.png", "a")
    image, resized = SegmentationDataset([sample], PREP, train=False)[0]
    assert image.shape == (3, 8, 8) and set(resized.unique().tolist()) == {0, 1}  # nearest: no new values
    assert image.min() >= -1 and image.max() <= 1  # normalised with mean 0.5, std 0.5
    assert resized[:, 0].eq(0).all() and resized[:, -1].eq(1).all()
    torch.manual_seed(0)
    flips = [SegmentationDataset([sample], PREP, train=True, flip=True)[0][1][0, 0].item() for _ in range(20)]
    assert set(flips) == {0, 1}  # sometimes flipped, sometimes not
    assert all(SegmentationDataset([sample], PREP, train=False, flip=True)[0][1][0, 0] == 0 for _ in range(5))
    wide, wide_mask = SegmentationDataset([sample], PREP, train=False, short_side=True)[0]
    assert wide.shape == (3, 8, 16) and wide_mask.shape == (8, 16)
    images, targets = collate_segmentation([(wide, wide_mask), (image, resized)])
    assert images.shape == (2, 3, 8, 16) and targets.shape == (2, 8, 16)
    assert targets[1, :, 8:].eq(IGNORE_INDEX).all() and images[1, :, :, 8:].eq(0).all()
    assert torch.equal(targets[0], wide_mask) and torch.equal(images[1, :, :, :8], image)
