"""The offline suite's natural and specialised builders and the suite writer, on small sizes."""

import json

import numpy as np
import pytest
from PIL import Image

from repadapter import RepAdapterError
from repadapter.training.data import load_vtab_task
from repadapter.training.data.vtab import SPLIT_FILES, suite_tasks
from repadapter_lab.offline import natural, specialized
from repadapter_lab.offline.suite import OFFLINE_TASKS, build_suite
from repadapter_lab.sources import FONT_FAMILIES, FONTS_DIR, GIMP_PATTERNS_DIR
from tests.fixtures import leftovers

SMALL = {"train": 12, "val": 6, "test": 12}


@pytest.fixture
def fake_stamps(tmp_path, monkeypatch):
    """Three stamp categories of 12 RGBA cut-outs each, in Tux Paint's folder layout."""
    root = tmp_path / "stamps"
    rng = np.random.default_rng(0)
    for c, name in enumerate(["animals", "food", "vehicles"]):
        (root / name / "sub").mkdir(parents=True)
        for i in range(12):
            rgba = np.zeros((40, 30, 4), dtype=np.uint8)
            rgba[5:35, 5:25, :3] = rng.integers(0, 256, 3) if c else 255
            rgba[5:35, 5:25, 3] = 255
            Image.fromarray(rgba).save(root / name / "sub" / f"{i}.png")
    from repadapter_lab import sources

    monkeypatch.setattr(natural, "tuxpaint_stamps", lambda: sources.tuxpaint_stamps(root))
    return root


# The regular face of every family that font_digits and font_id read (each also reads its variants).
FONT_FILES = [FONTS_DIR / folder / f"{stem}.ttf" for folder, stem, _ in FONT_FAMILIES.values()]


def _needs(*paths):
    missing = [str(p) for p in paths if not p.exists()]
    return pytest.mark.skipif(
        bool(missing), reason=f"source not installed: {missing} (tools/test.sh installs it)"
    )


def test_tux_objects_keep_stamps_apart_across_splits(fake_stamps):
    pools = {s: set(natural._pool_split(sorted((fake_stamps / "food").rglob("*.png")), s)) for s in SMALL}
    assert pools["train"] and pools["val"] and pools["test"]
    assert not (
        pools["train"] & pools["val"] or pools["train"] & pools["test"] or pools["val"] & pools["test"]
    )
    out = natural.tux_objects(SMALL, 0)
    assert {s: len(v) for s, v in out.items()} == SMALL
    assert all(img.shape == (64, 64, 3) and img.dtype == np.uint8 for img, _ in out["train"])
    assert sorted({label for _, label in out["test"]}) == [0, 1, 2]


@pytest.mark.parametrize(
    ("builder", "classes"),
    [
        pytest.param(natural.font_digits, 10, marks=_needs(*FONT_FILES)),
        pytest.param(natural.textures, 58, marks=_needs(GIMP_PATTERNS_DIR)),
        (specialized.science_patches, 5),
        (specialized.lfw_faces, 2),
        pytest.param(specialized.font_id, 6, marks=_needs(*FONT_FILES)),
    ],
)
def test_builders_are_deterministic_sized_and_labelled(builder, classes):
    sizes = {"train": 2 * classes, "test": classes}
    first, again, other = builder(sizes, 0), builder(sizes, 0), builder(sizes, 1)
    assert {s: len(v) for s, v in first.items()} == sizes
    for split in sizes:
        assert all(
            np.array_equal(a, b) and la == lb
            for (a, la), (b, lb) in zip(first[split], again[split], strict=True)
        )
        assert sorted({label for _, label in first[split]}) == list(range(classes))
    assert any(
        not np.array_equal(a, b) for (a, _), (b, _) in zip(first["train"], other["train"], strict=True)
    )


def test_science_patches_come_from_disjoint_bands():
    bands = specialized.SPLIT_BANDS
    assert bands["train"][1] <= bands["val"][0] and bands["val"][1] <= bands["test"][0]


def test_lfw_splits_use_distinct_images_and_cap_the_sizes():
    out = specialized.lfw_faces({"train": 120, "test": 50}, 0)
    faces = [img for img, label in out["test"] if label == 1]
    distinct = {min(img.tobytes(), img[:, ::-1].tobytes()) for img in faces}
    assert len(faces) == 25 and len(distinct) == 25
    assert OFFLINE_TASKS["lfw_faces"].max_sizes == {"train": 120, "val": 30, "test": 50}


def test_suite_is_written_in_the_vtab_layout_reloads_and_rebuilds_byte_identically(tmp_path, fake_stamps):
    tasks = ["tux_objects", "lfw_faces", "dsprites_loc"]
    logs: list[str] = []
    manifest = build_suite(tmp_path / "a", tasks, SMALL, seed=0, progress=False, log=logs.append)
    again = build_suite(tmp_path / "b", tasks, SMALL, seed=0, progress=False, log=logs.append)
    assert [manifest["tasks"][t]["sha256"] for t in tasks] == [again["tasks"][t]["sha256"] for t in tasks]
    for task in tasks:
        folder = tmp_path / "a" / task
        assert {f: (folder / f).is_file() for f in SPLIT_FILES.values()} == dict.fromkeys(
            SPLIT_FILES.values(), True
        )
        lines = {s: (folder / f).read_text().splitlines() for s, f in SPLIT_FILES.items()}
        assert lines["trainval"] == lines["train"] + lines["val"]
        assert len(lines["test"]) == SMALL["test"]
        loaded = load_vtab_task(folder)
        assert (
            loaded.num_classes == OFFLINE_TASKS[task].num_classes
            and loaded.group == OFFLINE_TASKS[task].group
        )
    entry = manifest["tasks"]["tux_objects"]
    assert entry["sources"][0]["package"] == "tuxpaint-stamps-default" and entry["sources"][0]["license"]
    assert entry["description"].startswith("Tux Paint")
    assert list(suite_tasks(tmp_path / "a")) == tasks
    saved = json.loads((tmp_path / "a" / "suite.json").read_text())
    assert saved["provenance"]["command"] and saved["tasks"] == manifest["tasks"]
    build_suite(tmp_path / "a", tasks, SMALL, seed=0, progress=False, log=logs.append)
    assert logs[-3:] == [f"{t}: cached" for t in tasks]
    assert not leftovers(tmp_path)


def test_unknown_tasks_and_missing_sources_are_named(tmp_path, monkeypatch):
    with pytest.raises(RepAdapterError, match="unknown offline task.*'cifar'"):
        build_suite(tmp_path, ["cifar"], SMALL, progress=False)
    from repadapter_lab import sources

    monkeypatch.setattr(natural, "tuxpaint_stamps", lambda: sources.tuxpaint_stamps(tmp_path / "absent"))
    with pytest.raises(RepAdapterError, match="apt-get install tuxpaint-stamps-default"):
        build_suite(tmp_path / "s", ["tux_objects"], SMALL, progress=False)
    assert not (tmp_path / "s" / "tux_objects").exists()
