import numpy as np
import pytest

from repadapter_lab.offline import structured
from repadapter_lab.offline.structured import STRUCTURED

SIZES = {"train": 32, "test": 16}


def _build(task: str, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` train images of ``task`` as one float array, and their labels."""
    examples = STRUCTURED[task][0]({"train": count}, seed)["train"]
    images, labels = zip(*examples, strict=True)
    return np.stack(images).astype(float), np.array(labels)


def _centred(images: np.ndarray) -> np.ndarray:
    """Grey images shifted so that the mass of what differs from the background sits in the middle."""
    out = []
    for image in images:
        grey = image if image.ndim == 2 else image.mean(axis=-1)
        weight = np.abs(grey - np.median(grey))
        rows, cols = np.indices(grey.shape)
        centre = (weight * rows).sum() / weight.sum(), (weight * cols).sum() / weight.sum()
        out.append(np.roll(grey, (round(31.5 - centre[0]), round(31.5 - centre[1])), axis=(0, 1)))
    return np.stack(out)


def _nearest_label(task: str, queries: int, references: int) -> tuple[np.ndarray, np.ndarray]:
    """For images of one seed, the label of the most correlated (centred) image of another seed."""
    query_images, query_labels = _build(task, queries, seed=0)
    reference_images, reference_labels = _build(task, references, seed=1)
    features = []
    for images in (query_images, reference_images):
        flat = _centred(images).reshape(len(images), -1)
        flat -= flat.mean(axis=1, keepdims=True)
        features.append(flat / np.linalg.norm(flat, axis=1, keepdims=True))
    return query_labels, reference_labels[np.argmax(features[0] @ features[1].T, axis=1)]


def _object_mask(images: np.ndarray) -> np.ndarray:
    """Pixels of the clevr scenes' objects: coloured, where floor, wall and shadows are grey."""
    return images.max(axis=-1) - images.min(axis=-1) > 25


def test_the_six_tasks_in_order_with_their_class_counts():
    assert " ".join(STRUCTURED) == "dsprites_loc dsprites_ori clevr_count clevr_dist object_azi object_ele"
    assert [classes for _, classes, _ in STRUCTURED.values()] == [16, 16, 8, 6, 18, 9]
    assert structured.CLEVR_DIST_CLASSES == 6 and structured.OBJECT_AZI_CLASSES == 18
    for name, (builder, _, description) in STRUCTURED.items():
        assert builder.__name__ == name and description and "Label:" in (builder.__doc__ or "")


@pytest.mark.parametrize("task", list(STRUCTURED))
def test_exact_sizes_balanced_labels_and_uint8_64px_images(task):
    builder, classes, _ = STRUCTURED[task]
    splits = builder(SIZES, 0)
    assert {split: len(examples) for split, examples in splits.items()} == SIZES
    for examples in splits.values():
        labels = np.array([label for _, label in examples])
        assert all(type(label) is int for _, label in examples)
        assert labels.min() >= 0 and labels.max() < classes
        counts = np.bincount(labels, minlength=classes)
        assert counts.max() - counts.min() <= 1
        channels = {image.shape[2:] for image, _ in examples}
        assert len(channels) == 1 and channels <= {(), (3,)}
        assert all(image.dtype == np.uint8 and image.shape[:2] == (64, 64) for image, _ in examples)
    assert {split: len(v) for split, v in builder({"val": 3, "test": 0}, 0).items()} == {"val": 3, "test": 0}


@pytest.mark.parametrize("task", list(STRUCTURED))
def test_same_seed_same_bytes_and_splits_and_seeds_differ(task):
    builder = STRUCTURED[task][0]
    sizes = {"train": 8, "test": 4}
    first, again, other = builder(sizes, 3), builder(sizes, 3), builder(sizes, 4)
    for split in sizes:
        for (image, label), (same_image, same_label) in zip(first[split], again[split], strict=True):
            assert label == same_label and image.tobytes() == same_image.tobytes()
    assert not np.array_equal(first["train"][0][0], other["train"][0][0])
    assert not np.array_equal(first["train"][0][0], first["test"][0][0])


def test_dsprites_loc_label_is_the_x_of_the_white_mass():
    images, labels = _build("dsprites_loc", 48)
    centroid_x = (images * np.arange(64)).sum(axis=(1, 2)) / images.sum(axis=(1, 2))
    assert np.corrcoef(centroid_x, labels)[0, 1] > 0.97
    per_label = [centroid_x[labels == label].mean() for label in range(16)]
    assert np.all(np.diff(per_label) > 0)


@pytest.mark.parametrize("task, classes", [("dsprites_ori", 16), ("object_azi", 18)])
def test_angle_labels_are_recoverable_by_nearest_neighbour(task, classes):
    # Chance of landing within one bin (circularly) is 3 / classes, under 0.2.
    truth, found = _nearest_label(task, queries=3 * classes, references=12 * classes)
    error = np.abs(truth - found)
    assert np.mean(np.minimum(error, classes - error) <= 1) > 0.6


def test_object_ele_higher_camera_shows_a_taller_object():
    images, labels = _build("object_ele", 45)
    mask = images > images[:, :1, :1] + 12  # brighter than the plain background
    height = np.array([np.ptp(np.flatnonzero(m.any(axis=1))) for m in mask])
    assert np.corrcoef(height, labels)[0, 1] > 0.5


def test_clevr_count_more_objects_cover_more_pixels():
    images, labels = _build("clevr_count", 48)
    assert np.corrcoef(_object_mask(images).mean(axis=(1, 2)), labels)[0, 1] > 0.4


def test_clevr_dist_closer_objects_reach_lower_in_the_image():
    images, labels = _build("clevr_dist", 36)
    lowest_row = np.array([np.flatnonzero(mask.any(axis=1)).max() for mask in _object_mask(images)])
    assert np.corrcoef(lowest_row, labels)[0, 1] < -0.8
    assert lowest_row[labels == 0].min() > lowest_row[labels == 5].max()
