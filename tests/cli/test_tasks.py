"""`repadapter train / eval / merge` end to end for segmentation and video, on fixture trees in
the released layouts (ADE20K, a clip list of frame folders)."""

import json

import numpy as np
import pytest
from PIL import Image

from repadapter.cli import main

TINY = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4", "--workers", "0"]
TINY += ["--selection", "none", "--scale", "1", "--quiet"]


def _ade20k(root):
    """ADEChallengeData2016 with 4 training and 2 validation pairs of 40 x 48 px."""
    rng = np.random.default_rng(0)
    for split, prefix, count in (("training", "ADE_train", 4), ("validation", "ADE_val", 2)):
        for i in range(count):
            mask = rng.integers(0, 151, (40, 48)).astype(np.uint8)
            rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            for folder in ("images", "annotations"):
                (root / folder / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(root / "images" / split / f"{prefix}_{i + 1:08d}.jpg")
            Image.fromarray(mask).save(root / "annotations" / split / f"{prefix}_{i + 1:08d}.png")
    return root


def _clips(root):
    """An HMDB51-style list task: 3 classes, frame folders of 10 frames at 32 px."""
    rng = np.random.default_rng(0)
    lines = {"train": [], "val": [], "test": []}
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        for i in range(count):
            folder = root / "frames" / f"{split}_{i}"
            folder.mkdir(parents=True)
            for t in range(10):
                frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(frame).save(folder / f"img_{t:05d}.png")
            lines[split].append(f"frames/{split}_{i} {i % 3}")
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    (root / "classes.txt").write_text("wave\nclap\nrun\n")
    return root


def _train_eval_merge(tmp_path, capsys, data, model, train_flags=()):
    """Train (with ``train_flags``), merge, and evaluate both; eval and merge get only the model."""
    run, deploy = tmp_path / "run", tmp_path / "merged.safetensors"
    base = ["--model", *model]
    assert main(["train", "--data", data, *base, "--out", str(run), *TINY, *train_flags]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert main(["merge", *base, "--adapter", str(run / "adapter.safetensors"), "--out", str(deploy)]) == 0
    capsys.readouterr()
    evaluate = ["eval", "--data", data, *base, "--workers", "0"]
    assert main([*evaluate, "--adapter", str(run / "adapter.safetensors")]) == 0
    assert main([*evaluate, "--weights", str(deploy)]) == 0
    adapted, merged = capsys.readouterr().out.splitlines()
    assert adapted == merged  # the merged model scores exactly what the adapted one did
    return summary, adapted


@pytest.mark.parametrize("levels", [1, 3])
def test_segmentation_on_an_ade20k_tree(tmp_path, capsys, levels):
    data = f"ade20k:{_ade20k(tmp_path / 'ADEChallengeData2016')}"
    model = ["vit_tiny6_patch4_32.fmnist", "--img-size", "32"]  # packaged weights: every command has them
    # eval and merge find the head's levels from the adapter file and the merged checkpoint
    summary, line = _train_eval_merge(tmp_path, capsys, data, model, ["--seg-levels", str(levels)])
    assert summary["config"]["seg_levels"] == levels
    assert summary["task_kind"] == "segmentation" and summary["metric"] == "mIoU"
    assert set(summary["test_scores"]) == {"mIoU", "pixel_accuracy", "mean_accuracy"}
    assert f"mIoU {100 * summary['test_score']:.2f}%" in line


def test_video_on_a_clip_list(tmp_path, capsys):
    data = f"videos:{_clips(tmp_path / 'clips')}"
    summary, line = _train_eval_merge(tmp_path, capsys, data, ["videomae_tiny6_patch4_32.fmnist"])
    assert summary["task_kind"] == "video" and summary["preprocessing"]["num_frames"] == 8
    assert f"accuracy {100 * summary['test_score']:.2f}%" in line


def test_a_task_that_does_not_fit_the_data_is_refused(tmp_path, capsys):
    data = f"videos:{_clips(tmp_path / 'clips')}"
    args = ["train", "--data", data, "--task", "segmentation", "--model", "vit_tiny6_patch4_32"]
    assert main([*args, "--out", str(tmp_path / "run"), *TINY]) != 0
    assert "holds a video task but the run is for --task segmentation" in capsys.readouterr().err
