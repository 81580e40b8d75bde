"""Run folders under bad input, driven through the real command line (a subprocess each).

Every case asserts the exit code, a message of one or two lines without a traceback, and the
disk afterwards: a refused command changes nothing, a failed start leaves no folder behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures import TINY_CLI_FLAGS, make_csv_folder, make_vtab_task

# the tiny recipe with a short schedule; the resume cases change one setting of it at a time
RECIPE = [*TINY_CLI_FLAGS, "--epochs", "2", "--selection", "none", "--scale", "1", "--lr", "0.002"]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "repadapter.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def refused(run: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The error of a command that must stop with exit code 2 and a short message."""
    message = run.stderr.strip()
    assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
    assert "Traceback" not in run.stderr and message.startswith("repadapter: error: "), message
    assert 1 <= len(message.splitlines()) <= 2, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: its content hash and modification time."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def truncate(image: Path) -> None:
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny train run in a folder whose parents did not exist, and its data."""
    base = tmp_path_factory.mktemp("runs")
    data = make_vtab_task(base / "vtab", "dtd", train=16, val=8, test=8)
    out = base / "missing" / "parents" / "run"
    run = cli("train", "--data", f"vtab:{data}", "--out", out, *RECIPE)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, data


def test_a_run_records_its_recipe_and_data_and_creates_missing_parents(finished):
    out, data = finished
    recipe = yaml.safe_load((out / "config.yaml").read_text())
    assert (recipe["lr"], recipe["epochs"], recipe["scale"], recipe["pretrained"]) == (0.002, 2, "1", False)
    assert yaml.safe_load((out / "data.yaml").read_text()) == {"data": f"vtab:{data.resolve()}"}


@pytest.mark.parametrize(
    "change, named",
    [
        (
            ["--lr", "0.01", "--scale", "0.5", "--seed", "7", "--dropout", "0.3", "--weight-decay", "0.05"],
            [
                "--lr 0.01 differs from the run's 0.002",
                "--scale 0.5 differs from the run's 1",
                "--seed 7 differs from the run's 42",
                "--dropout 0.3 differs from the run's 0.1",
                "--weight-decay 0.05 differs from the run's 0.0001",
            ],
        ),
        (
            ["--epochs", "3", "--dim", "4", "--placement", "attn", "--method", "linear"],
            [
                "--epochs 3 differs from the run's 2",
                "--dim 4 differs from the run's 8",
                "--placement attn differs from the run's block",
                "--method linear differs from the run's repadapter",
            ],
        ),
        (
            ["--model", "vit_small_patch16_224", "--pretrained"],
            [
                "--model vit_small_patch16_224 differs from the run's vit_tiny_patch16_224",
                "--pretrained differs from the run's --no-pretrained",
            ],
        ),
    ],
)
def test_resume_refuses_a_changed_recipe_naming_each_flag_and_changes_nothing(finished, change, named):
    out, data = finished
    before = snapshot(out)
    run = cli("train", "--data", f"vtab:{data}", "--out", out, *RECIPE, *change, "--resume")
    refused(run, *named, "drop those flags to resume it, or give another --out")
    assert snapshot(out) == before


def test_resume_refuses_other_data_and_a_config_file_that_changes_the_recipe(finished, tmp_path):
    out, data = finished
    before = snapshot(out)
    other = make_vtab_task(tmp_path, "dtd", train=16, val=8, test=8)
    config = tmp_path / "recipe.yaml"
    config.write_text("lr: 0.002\nwarmup_epochs: 0\n")
    run = cli("train", "--data", f"vtab:{other}", "--out", out, "--config", config, "--resume", "--quiet")
    refused(run, f"--data vtab:{other.resolve()} differs from the run's vtab:{data.resolve()}")
    assert "--warmup-epochs 0 differs from the run's 1" in run.stderr and "--lr" not in run.stderr
    assert snapshot(out) == before


def test_resume_keeps_the_recorded_recipe_and_lets_runtime_settings_differ(finished):
    out, data = finished
    record = (out / "config.yaml").read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    # no recipe flag at all: the run's own recipe (not the defaults: 100 epochs of a hub ViT-B)
    run = cli("train", "--data", f"vtab:{data}", "--out", out, "--resume", "--quiet", "--workers", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    again = json.loads((out / "summary.json").read_text())
    assert again["test_score"] == summary["test_score"] and again["config"]["epochs"] == 2
    assert again["config"]["workers"] == 1 and (out / "config.yaml").read_bytes() == record


def test_resume_of_a_folder_without_a_run_is_refused(tmp_path):
    data = make_vtab_task(tmp_path / "suite", "dtd", train=8, val=4, test=4)
    missing = tmp_path / "nothing"
    refused(cli("train", "--data", f"vtab:{data}", "--out", missing, "--resume"), "does not exist")
    assert not missing.exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    run = cli("vtab", "--root", tmp_path / "suite", "--out", tmp_path / "notes", "--resume", "--quiet")
    refused(run, "is not a run folder (it has no config.yaml)")
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]


def test_vtab_resume_refuses_changed_epochs_lr_and_root(tmp_path):
    root = tmp_path / "suite"
    make_vtab_task(root, "eurosat", train=8, val=4, test=4)
    out = tmp_path / "out"
    flags = [*TINY_CLI_FLAGS, "--epochs", "2", "--selection", "none", "--scale", "1", "--method", "linear"]
    assert cli("vtab", "--root", root, "--out", out, *flags).returncode == 0
    before = snapshot(out)
    run = cli("vtab", "--root", root, "--out", out, *flags, "--epochs", "3", "--lr", "0.1", "--resume")
    refused(run, "--epochs 3 differs from the run's 2", "--lr 0.1 differs from the run's 0.001")
    shutil.copytree(root, tmp_path / "copy")
    run = cli("vtab", "--root", tmp_path / "copy", "--out", out, *flags, "--resume")
    refused(run, f"--root {(tmp_path / 'copy').resolve()} differs from the run's {root.resolve()}")
    assert snapshot(out) == before


@pytest.mark.parametrize("split_file, workers", [("test.txt", "2"), ("val200.txt", "0")])
def test_a_truncated_image_is_reported_before_any_folder_is_made(tmp_path, split_file, workers):
    data = make_vtab_task(tmp_path, "dtd", train=8, val=4, test=4)
    rel = (data / split_file).read_text().splitlines()[1].split()[0]
    truncate(data / rel)
    out = tmp_path / "run"
    run = cli("train", "--data", f"vtab:{data}", "--out", out, *RECIPE, "--workers", workers)
    refused(run, f"{data / split_file}:2: {data / rel} is not a readable image", "truncated")
    assert not out.exists()


def test_a_truncated_image_in_a_csv_tree_and_in_a_vtab_suite_is_reported_first(tmp_path):
    data = make_csv_folder(tmp_path / "csv")
    truncate(data / "img" / "test_dog_3.png")
    run = cli("train", "--data", f"csv:{data}", "--out", tmp_path / "run", *RECIPE)
    refused(run, "test.csv:9: ", "test_dog_3.png is not a readable image")
    root = tmp_path / "suite"
    for task in ("cifar", "eurosat"):
        make_vtab_task(root, task, train=8, val=4, test=4)
    truncate(root / "eurosat" / "images" / "test_0003.png")
    run = cli("vtab", "--root", root, "--out", tmp_path / "suite_run", *RECIPE)
    refused(run, "eurosat/test.txt:4: ", "not a readable image")
    assert not (tmp_path / "run").exists() and not (tmp_path / "suite_run").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "vit_nonexistent_patch16"], "unknown model 'vit_nonexistent_patch16'"),
        (["--batch-size", "64"], "fewer than one batch of 64"),
        (["--scale", "paper"], "--scale paper needs a VTAB-1k task"),
        (["--method", "vpt-deep", "--model", "resnet18"], "vpt-deep"),
        (["--device", "tpu9"], "--device 'tpu9' is not a device"),
        (["--lr", "inf"], "every number must be finite"),
    ],
)
def test_bad_settings_are_refused_before_any_folder_is_made(tmp_path, flags, message):
    data = make_csv_folder(tmp_path / "mine", per_class=4)
    out = tmp_path / "parent" / "run"
    refused(cli("train", "--data", f"csv:{data}", "--out", out, *RECIPE, *flags), message)
    assert not (tmp_path / "parent").exists()


def test_a_start_that_fails_while_training_leaves_no_folder(tmp_path):
    data = make_vtab_task(tmp_path, "dtd", train=16, val=8, test=8)
    out = tmp_path / "run"
    run = cli(
        "train", "--data", f"vtab:{data}", "--out", out, *RECIPE, "--lr", "1e20", "--warmup-epochs", "0"
    )
    refused(run, "the training loss became", "Lower --lr")
    assert not out.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr: [0.01\nepochs: 3\n", "is not valid YAML: expected ',' or ']', but got ':' at line 2"),
        ("learning_rate: 0.01\n", "unknown settings ['learning_rate']"),
        ("lr: fast\n", "lr must be a number, got 'fast'"),
        ("epochs: 2.5\n", "epochs must be a whole number, got 2.5"),
    ],
)
def test_a_broken_config_file_is_one_line(tmp_path, text, message):
    data = make_vtab_task(tmp_path, "dtd", train=8, val=4, test=4)
    (tmp_path / "recipe.yaml").write_text(text)
    run = cli(
        "train", "--data", f"vtab:{data}", "--out", tmp_path / "run", "--config", tmp_path / "recipe.yaml"
    )
    assert len(refused(run, message).splitlines()) == 1
    assert not (tmp_path / "run").exists()


def read_only_folder(tmp_path: Path) -> Path:
    """A folder nothing can be made in: read-only by its mode, or (root ignores modes) /sys."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("place", ["file", "under_file", "read_only"])
def test_an_out_where_nothing_can_be_written_is_refused_for_every_writing_command(tmp_path, place):
    data = make_vtab_task(tmp_path / "suite", "dtd", train=8, val=4, test=4)
    blocker = tmp_path / "taken.txt"
    blocker.write_text("keep me")
    parent = {"file": None, "under_file": blocker, "read_only": read_only_folder(tmp_path)}[place]
    target = blocker if parent is None else parent / "out"
    commands = [
        ["train", "--data", f"vtab:{data}", *RECIPE, "--out", target],
        ["vtab", "--root", tmp_path / "suite", *RECIPE, "--out", target],
        ["bench", "latency", "--models", "vit_tiny_patch16_224", "--out", target],
        ["data", "build", "video", "--root", target],
    ]
    if parent is not None:  # file outputs: a file may be replaced, but not under a file or read-only
        commands += [
            ["pretrain", "--out", target / "weights"],
            ["merge", "--model", "vit_tiny_patch16_224", "--adapter", blocker, "--out", target],
            ["export", "--model", "vit_tiny_patch16_224", "--adapter", blocker, "--onnx", target],
            ["demo", "--json", target],
        ]
    for command in commands:
        message = refused(cli(*command))
        assert any(s in message for s in ("is a file", "cannot write in")), message
    assert blocker.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == [
        *(["read_only"] if place == "read_only" and os.geteuid() != 0 else []),
        "suite",
        "taken.txt",
    ]
