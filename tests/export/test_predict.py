"""`repadapter predict` end to end: a tiny run, then predictions on a folder with a bad image."""

import csv
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

import repadapter as ra
from repadapter.cli import main
from repadapter.families.factory import create_base
from repadapter.training.data.transforms import eval_transform, preprocessing
from tests.fixtures import TINY_CLI_FLAGS, make_image_folder

# the packaged pretrained in-house ViT: every process builds the same base model
MODEL = ["--model", "vit_tiny6_patch4_32.fmnist"]
TINY = [f for f in TINY_CLI_FLAGS if f not in ("--model", "vit_tiny_patch16_224", "--no-pretrained")]


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "repadapter.cli", *args], capture_output=True, text=True, timeout=300
    )


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained run on a cat/dog folder, its merged checkpoint, and an image folder holding the
    test images, a truncated PNG and a file that is not an image."""
    tmp = tmp_path_factory.mktemp("predict")
    data = make_image_folder(tmp / "data")
    run = cli("train", "--data", f"folder:{data}", *MODEL, *TINY, "--epochs", "2", "--out", str(tmp / "run"))
    assert run.returncode == 0, run.stderr
    adapter, merged = tmp / "run" / "adapter.safetensors", tmp / "merged.safetensors"
    run = cli("merge", *MODEL, "--img-size", "32", "--adapter", str(adapter), "--out", str(merged))
    assert run.returncode == 0, run.stderr
    images = tmp / "images"
    shutil.copytree(data / "test", images / "test")
    (images / "test" / "cat" / "0.png").rename(images / "top.png")  # images at several depths
    payload = (images / "test" / "dog" / "1.png").read_bytes()
    (images / "test" / "dog" / "broken.png").write_bytes(payload[: len(payload) // 2])
    (images / "notes.txt").write_text("not an image, not listed")
    (tmp / "classes.txt").write_text("cat\ndog\n")
    return tmp, adapter, merged, images


def test_predictions_are_the_models_own_top_classes(trained):
    tmp, adapter, merged, images = trained
    out = tmp / "pred.csv"
    run = cli(
        "predict", *MODEL, "--adapter", str(adapter), "--images", str(images), "--out", str(out),
        "--topk", "2", "--batch-size", "3", "--class-names", str(tmp / "classes.txt"), "--device", "cpu",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "skipped test/dog/broken.png: not a readable image" in run.stderr
    assert "top-2 of 2 classes for 8 images, 1 unreadable image(s) skipped" in run.stdout
    assert "predict: 100%" in run.stderr  # the progress bar
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "class_1", "name_1", "prob_1", "class_2", "name_2", "prob_2"]
    assert [r["path"] for r in rows] == sorted(
        p.relative_to(images).as_posix() for p in images.rglob("*.png") if p.name != "broken.png"
    )

    base = create_base("vit_tiny6_patch4_32.fmnist", num_classes=2, img_size=32)
    model = ra.load_adapter(base, adapter).eval()
    transform = eval_transform(preprocessing(model))
    batch = torch.stack([transform(Image.open(images / r["path"]).convert("RGB")) for r in rows])
    with torch.no_grad():
        probs = model(batch).softmax(dim=1)
    for row, p in zip(rows, probs, strict=True):
        top = int(p.argmax())
        assert int(row["class_1"]) == top and row["name_1"] == ("cat", "dog")[top]
        assert int(row["class_2"]) == 1 - top
        assert float(row["prob_1"]) == pytest.approx(float(p[top]), abs=2e-6)
        assert float(row["prob_1"]) + float(row["prob_2"]) == pytest.approx(1.0, abs=3e-6)
    assert len({r["class_1"] for r in rows}) == 2  # the run learned something: both classes appear

    again = tmp / "pred_merged.csv"
    run = cli("predict", *MODEL, "--weights", str(merged), "--images", str(images), "--out", str(again))
    assert run.returncode == 0, run.stderr
    merged_rows = read_csv(again)
    # the default top-k is all classes where there are fewer than 5; no names without --class-names
    assert list(merged_rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2"]
    assert [(r["path"], r["class_1"]) for r in merged_rows] == [(r["path"], r["class_1"]) for r in rows]
    for a, b in zip(rows, merged_rows, strict=True):
        assert float(a["prob_1"]) == pytest.approx(float(b["prob_1"]), abs=1e-5)


def test_bad_images_and_outputs_are_refused(trained, capsys):
    tmp, adapter, merged, images = trained
    base = ["predict", *MODEL, "--quiet", "--images", str(images)]
    out = tmp / "refused.csv"
    assert main([*base, "--adapter", str(adapter), "--out", str(out), "--on-bad-image", "error"]) == 2
    err = capsys.readouterr().err
    assert "broken.png is not a readable image" in err and "--on-bad-image skip" in err
    assert not out.exists()
    assert main([*base, "--adapter", str(adapter), "--out", str(adapter)]) == 2
    assert "is the --adapter input itself" in capsys.readouterr().err
    assert main([*base, "--adapter", str(adapter), "--out", str(images / "top.png")]) == 2
    assert "and the --images input" in capsys.readouterr().err
    assert main([*base, "--adapter", str(adapter), "--no-pretrained", "--out", str(out)]) == 2
    assert "was trained on another backbone than the one these flags build" in capsys.readouterr().err
    assert main([*base, "--adapter", str(adapter), "--weights", str(merged), "--out", str(out)]) == 2
    assert "exactly one of --adapter" in capsys.readouterr().err
    assert main([*base, "--adapter", str(adapter), "--out", str(out), "--topk", "3"]) == 2
    assert "--topk 3: give 1 to 2, the model's number of classes" in capsys.readouterr().err
    (tmp / "three.txt").write_text("a\nb\nc\n")
    assert (
        main([*base, "--adapter", str(adapter), "--out", str(out), "--class-names", str(tmp / "three.txt")])
        == 2
    )
    assert "names 3 classes but the model has 2" in capsys.readouterr().err
    assert not out.exists()
