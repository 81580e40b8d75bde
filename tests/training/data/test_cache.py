"""Decoded-once images (--data-cache): the same tensors as decoding every time, reused across
epochs, scales and runs, and rebuilt when an image changes."""

import numpy as np
import pytest
import torch
from PIL import Image

from repadapter import RepAdapterError
from repadapter.training.data import cache
from repadapter.training.data.cache import CachedImages
from repadapter.training.data.lists import ImageListDataset, Sample
from repadapter.training.data.transforms import eval_transform

PREP = {"input_size": [24, 20], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic"}


@pytest.fixture
def samples(tmp_path, monkeypatch):
    """Images of several sizes and modes (RGB, grey, RGBA, palette), so resizing does real work."""
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(cache, "_memory", type(cache._memory)())
    rng = np.random.default_rng(0)
    out = []
    for i, (mode, size) in enumerate(
        [("RGB", (31, 17)), ("L", (8, 40)), ("RGBA", (24, 20)), ("P", (50, 50))]
    ):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)
        out.append(Sample(path, i % 2, f"list:{i + 1}"))
    return out


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_tensors_are_bit_identical_to_decoding_every_time(samples, mode):
    plain = ImageListDataset(samples, eval_transform(PREP))
    cached = CachedImages(samples, PREP, mode)
    assert cached.mode == mode and len(cached) == len(plain)
    for (x, label), (y, cached_label) in zip(plain, cached, strict=True):
        assert torch.equal(x, y) and label == cached_label


def _no_decoding(monkeypatch):
    def refuse(self, index):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache._Resized, "__getitem__", refuse)


def test_a_second_dataset_reads_the_kept_pixels(samples, monkeypatch):
    first = CachedImages(samples, PREP, "memory")
    on_disk = CachedImages(samples, PREP, "disk")
    _no_decoding(monkeypatch)
    again = CachedImages(samples, PREP, "memory")
    assert again.pixels is first.pixels
    cache._memory.clear()  # a new process: only the file is left
    from_file = CachedImages(samples, PREP, "disk")
    assert np.array_equal(from_file.pixels, on_disk.pixels)
    assert [p.suffix for p in (cache.CACHE_DIR).iterdir()] == [".npy"]  # no temporary file left


def test_a_changed_image_or_size_is_decoded_again(samples):
    key = cache.fingerprint(samples, PREP)
    assert cache.fingerprint(samples, {**PREP, "input_size": [24, 24]}) != key
    Image.new("RGB", (5, 5), (1, 2, 3)).save(samples[0].path)
    assert cache.fingerprint(samples, PREP) != key
    fresh = CachedImages(samples, PREP, "disk")
    assert torch.equal(fresh[0][0], eval_transform(PREP)(Image.open(samples[0].path).convert("RGB")))


def test_a_broken_cache_file_is_written_anew(samples):
    CachedImages(samples, PREP, "disk")
    (path,) = cache.CACHE_DIR.iterdir()
    path.write_bytes(path.read_bytes()[:100])
    rebuilt = CachedImages(samples, PREP, "disk")
    assert torch.equal(rebuilt[3][0], ImageListDataset(samples, eval_transform(PREP))[3][0])


def test_an_undecodable_image_names_its_list_line(samples):
    samples[2].path.write_bytes(b"not an image")
    with pytest.raises(RepAdapterError, match="list:3"):
        CachedImages(samples, PREP, "memory")


def test_auto_goes_to_disk_past_its_share_of_memory(samples, monkeypatch):
    assert CachedImages(samples, PREP, "auto").mode == "memory"
    monkeypatch.setattr(cache, "MEMORY_SHARE", 0.0)
    assert CachedImages(samples, PREP, "auto").mode == "disk"
