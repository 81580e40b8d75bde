"""Clip lists in the real layouts (SSv2 / HMDB51 'path label', mmaction 'path total_frames label'),
frame sampling, and the errors for bad clips and lines."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from repadapter import RepAdapterError
from repadapter.training.data.video import (
    ClipDataset,
    ClipSample,
    check_clips,
    load_video_list_task,
    read_video_list,
    sample_indices,
)

PREP = {"input_size": [8, 8], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def _frames(folder, count, size=12):
    """Frame t is a flat grey of level 10 * t, so a served frame tells which one it was."""
    folder.mkdir(parents=True)
    for t in range(count):
        Image.fromarray(np.full((size, size), 10 * t, dtype=np.uint8)).save(folder / f"img_{t:05d}.png")


@pytest.fixture
def task_root(tmp_path):
    """An SSv2-like task: frame folders, 2-column train/val, 3-column (rawframes) test, classes."""
    root = tmp_path / "clips"
    for name, count in [("a", 10), ("b", 6), ("c", 3), ("d sub/e", 8)]:
        _frames(root / "rawframes" / name, count)
    (root / "classes.txt").write_text("push\npull\nturn\n")
    (root / "train.txt").write_text("rawframes/a 0\nrawframes/b 1\n\n")
    (root / "val.txt").write_text("rawframes/d sub/e 2\n")
    (root / "test.txt").write_text("rawframes/c 3 1\nrawframes/a 10 0\n")
    return root


def test_a_task_in_the_list_layout_reads_every_split(task_root):
    task = load_video_list_task(task_root)
    assert task.num_classes == 3 and task.class_names == ("push", "pull", "turn")
    assert [s.label for s in task.split("trainval")] == [0, 1, 2]
    assert task.split("val")[0].path == task_root / "rawframes" / "d sub" / "e"  # a path with a space
    assert [(s.path.name, s.label) for s in task.split("test")] == [("c", 1), ("a", 0)]
    assert task.split("test")[0].origin.endswith("test.txt:1")


def test_segment_sampling_takes_one_frame_per_segment():
    rng = np.random.default_rng(0)
    assert sample_indices(16, 4, "segment", False, rng) == [2, 6, 10, 14]  # segment middles
    for _ in range(20):
        picks = sample_indices(16, 4, "segment", True, rng)
        assert all(4 * i <= p < 4 * (i + 1) for i, p in enumerate(picks))
    draws = {tuple(sample_indices(16, 4, "segment", True, rng)) for _ in range(20)}
    assert len(draws) > 5  # random within segments, independently


def test_uniform_sampling_is_evenly_spaced_with_one_offset():
    rng = np.random.default_rng(0)
    assert sample_indices(16, 4, "uniform", False, rng) == [2, 6, 10, 14]
    for _ in range(20):
        picks = sample_indices(16, 4, "uniform", True, rng)
        assert np.diff(picks).tolist() == [4, 4, 4] and 0 <= picks[0] < 4


def test_short_clips_repeat_frames_and_empty_ones_are_refused():
    rng = np.random.default_rng(0)
    for mode in ("segment", "uniform"):
        for train in (False, True):
            picks = sample_indices(3, 8, mode, train, rng)
            assert len(picks) == 8 and picks == sorted(picks) and set(picks) <= {0, 1, 2}
        assert set(sample_indices(3, 8, mode, False, rng)) == {0, 1, 2}
    with pytest.raises(RepAdapterError, match="no frames"):
        sample_indices(0, 8, "segment", False, rng)
    with pytest.raises(RepAdapterError, match="not one of"):
        sample_indices(8, 8, "dense", False, rng)


def test_the_dataset_serves_normalised_resized_frames_in_time_order(task_root):
    samples = load_video_list_task(task_root).split("train")
    clips = ClipDataset(samples, PREP, num_frames=4, sampling="segment", train=False)
    frames, label = clips[0]  # clip a: 10 frames -> middles of 4 segments 1, 3, 6, 8
    assert frames.shape == (4, 3, 8, 8) and frames.dtype == torch.float32 and label == 0
    levels = ((frames[:, 0, 0, 0] * 0.5 + 0.5) * 255).round().tolist()
    assert levels == [10.0 * t for t in (1, 3, 6, 8)]
    torch.manual_seed(0)
    train = ClipDataset(samples, PREP, num_frames=4, sampling="uniform", train=True, seed=1)
    draws = {tuple(train[0][0][:, 0, 0, 0].tolist()) for _ in range(8)}
    assert len(draws) > 1  # training draws change between epochs
    torch.manual_seed(0)
    again = ClipDataset(samples, PREP, num_frames=4, sampling="uniform", train=True, seed=1)
    assert {tuple(again[0][0][:, 0, 0, 0].tolist()) for _ in range(8)} == draws  # and repeat across runs


def test_errors_name_the_list_line(task_root):
    bad = task_root / "bad.txt"
    for text, match in [
        ("rawframes/a 0\nrawframes/missing 1\n", r"bad\.txt:2: clip .*missing does not exist"),
        ("rawframes/a\n", r"bad\.txt:1: expected 'frame_folder_or_video label'"),
        ("rawframes/a 3\n", r"bad\.txt:1: label 3 is out of range for 3 classes"),
        ("rawframes/a -1\n", r"label -1 is out of range"),
        ("\n\n", "has no clips"),
    ]:
        bad.write_text(text)
        with pytest.raises(RepAdapterError, match=match):
            read_video_list(bad, task_root, num_classes=3)
    (task_root / "rawframes" / "empty").mkdir()
    (task_root / "rawframes" / "notes.txt").write_text("x")
    bad.write_text("rawframes/empty 0\n")
    with pytest.raises(RepAdapterError, match=r"bad\.txt:1: frame folder .*empty has no frames"):
        read_video_list(bad, task_root)
    bad.write_text("rawframes/notes.txt 0\n")
    with pytest.raises(RepAdapterError, match="neither a frame folder nor a video file"):
        read_video_list(bad, task_root)
    with pytest.raises(RepAdapterError, match="does not exist"):
        read_video_list(task_root / "nope.txt", task_root)
    frame = task_root / "rawframes" / "b" / "img_00004.png"
    frame.write_bytes(frame.read_bytes()[:-30])  # cut inside the image data
    bad.write_text("rawframes/a 0\nrawframes/b 1\n")
    with pytest.raises(RepAdapterError, match=r"bad\.txt:2: .*img_00004\.png is not a readable image"):
        read_video_list(bad, task_root)


def test_layout_errors(tmp_path, task_root):
    with pytest.raises(RepAdapterError, match="expected layout"):
        load_video_list_task(tmp_path / "nowhere")
    (task_root / "classes.txt").unlink()
    with pytest.raises(RepAdapterError, match="has no classes.txt"):
        load_video_list_task(task_root)


def test_video_files_without_pyav_say_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "v.webm").write_bytes(b"\x1a\x45\xdf\xa3")
    (tmp_path / "list.txt").write_text("v 0\n")  # SSv2 lists name videos without the suffix
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(
        RepAdapterError, match=r"list\.txt:1: decoding video files needs PyAV.*pip install av"
    ):
        read_video_list(tmp_path / "list.txt", tmp_path)


def test_video_files_decode_with_pyav(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for t in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 40 * t, dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    check_clips([ClipSample(path, 0, "x:1")], 1)
    frames, _ = ClipDataset([ClipSample(path, 0, "x:1")], PREP, num_frames=3)[0]
    levels = (frames[:, 0, 4, 4] * 0.5 + 0.5) * 255
    assert frames.shape == (3, 3, 8, 8) and (levels.diff() > 40).all()


def test_the_video_task_kind_builds_serves_and_scores(task_root):
    pytest.importorskip("transformers")
    from repadapter.training.config import TrainConfig
    from repadapter.training.tasks import confusion, logits_of, task_kind

    kind = task_kind("video")
    cfg = TrainConfig(
        task="video", model="videomae_tiny6_patch4_32", pretrained=False, num_frames=4, drop_path=0.1
    )
    model = kind.build_model(cfg, 3).eval()
    prep = kind.preprocessing(model, "model")
    assert prep["num_frames"] == 4 and prep["input_size"] == [32, 32] and prep["frame_sampling"] == "segment"
    assert kind.preprocessing(model, "imagenet")["mean"] == [0.485, 0.456, 0.406]
    task = load_video_list_task(task_root)
    clips = kind.eval_dataset(task.split("trainval"), prep, cfg)
    batch = torch.stack([clips[i][0] for i in range(len(clips))])
    labels = torch.tensor([clips[i][1] for i in range(len(clips))])
    assert batch.shape == (3, 4, 3, 32, 32)
    with torch.no_grad():
        logits = logits_of(model(batch))
    assert kind.loss(logits, labels).item() > 0
    assert 0 <= kind.score(confusion(logits, labels, 3))["accuracy"] <= 1
    with pytest.raises(RepAdapterError, match="takes 4 frames"):
        kind.train_dataset(task.split("train"), prep, TrainConfig(task="video", num_frames=8))
