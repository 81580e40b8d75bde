import json
import subprocess
import sys

import pytest

from repadapter.training.vtab_run import render_table, vtab_table
from tests.fixtures import TINY_CLI_FLAGS, make_vtab_task


def summary(task, acc, group):
    return {
        "task": task,
        "group": group,
        "test_score": acc,
        "adapter_params": 240_000,
        "trained_params": 300_000,
        "protocol": "p",
    }


def test_table_means_follow_the_paper():
    summaries = [
        summary("cifar", 0.70, "natural"),
        summary("dtd", 0.50, "natural"),
        summary("eurosat", 0.90, "specialized"),
        summary("kitti", 0.30, "structured"),
    ]
    table = vtab_table(summaries)
    assert table["group_means"] == pytest.approx({"natural": 60.0, "specialized": 90.0, "structured": 30.0})
    assert table["paper_average"] == pytest.approx(60.0)  # mean of the group means
    assert table["plain_mean"] == pytest.approx(60.0)  # (70 + 50 + 90 + 30) / 4
    assert table["paper_average_is_partial"]
    text = render_table(table)
    assert "| natural | cifar | 70.0 |" in text and "**paper average** (mean of group means) (partial" in text


def test_vtab_command_end_to_end_on_a_three_task_tree(tmp_path):
    for task in ("cifar", "eurosat", "clevr_count"):
        make_vtab_task(tmp_path / "vtab", task, train=16, val=8, test=8)
    root, out = str(tmp_path / "vtab"), str(tmp_path / "out")
    command = [sys.executable, "-m", "repadapter.cli", "vtab", "--root", root, "--out", out, *TINY_CLI_FLAGS]
    command += ["--epochs", "2", "--scale", "paper"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "paper average" in run.stdout
    results = json.loads((tmp_path / "out" / "vtab_results.json").read_text())
    assert set(results["table"]["tasks"]) == {"cifar", "eurosat", "clevr_count"}
    assert results["table"]["group_means"]["specialized"] == results["table"]["tasks"]["eurosat"]
    assert (
        json.loads((tmp_path / "out" / "eurosat" / "summary.json").read_text())["scale"] == 1.0
    )  # paper block
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds a run; pass --resume" in again.stderr
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "paper average" in resumed.stdout


def test_vtab_command_runs_the_offline_suite_built_by_the_cli(tmp_path, capsys):
    from repadapter.cli import main

    root, out = tmp_path / "offline", tmp_path / "out"
    build = ["data", "build", "offline", "--root", str(root), "--tasks", "dsprites_loc", "lfw_faces"]
    assert main([*build, "--train", "16", "--val", "8", "--test", "8", "--quiet"]) == 0
    assert "offline suite: 2 tasks" in capsys.readouterr().out
    args = ["vtab", "--root", str(root), "--out", str(out), *TINY_CLI_FLAGS, "--epochs", "1"]
    assert main([*args, "--warmup-epochs", "0", "--selection", "none", "--method", "linear", "--quiet"]) == 0
    table = json.loads((out / "vtab_results.json").read_text())["table"]
    assert table["task_groups"] == {"lfw_faces": "specialized", "dsprites_loc": "structured"}
    assert table["suite_size"] == 2 and table["group_means"]["natural"] is None
    assert "| structured | dsprites_loc |" in (out / "vtab_table.md").read_text()
    assert json.loads((out / "lfw_faces" / "summary.json").read_text())["method"] == "linear"
