"""`repadapter bench domains`: adapt on K shots of one digit domain, test on every domain."""

import json
import statistics

import pytest

from repadapter.cli import main
from repadapter_lab.benchmarks.domains import render_domains
from repadapter_lab.offline.suite import build_suite
from tests.fixtures import IMAGE_MODEL, assert_refused, run_cli

TINY = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4", "--eval-batch-size", "16"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The suite's two digit domains and a 6-class task, built tiny from their real sources."""
    root = tmp_path_factory.mktemp("suite")
    sizes = {"train": 20, "val": 10, "test": 10}
    build_suite(root, ["mnist", "font_digits", "font_id"], sizes, progress=False, log=lambda _: None)
    return root


def test_table_of_methods_from_one_source_on_every_domain(suite, tmp_path):
    out, runs = tmp_path / "results", tmp_path / "runs"
    args = ["bench", "domains", "--root", suite, "--sources", "mnist", "--shots", "2", "--out", out]
    args += [
        "--runs",
        runs,
        "--methods",
        "repadapter-block",
        "lora",
        "--model",
        IMAGE_MODEL,
        *TINY,
        "--quiet",
    ]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "domains.json").read_text())
    assert result["provenance"]["command"].split()[1:3] == ["bench", "domains"]
    assert result["domains"] == ["mnist", "font_digits"] and result["sources"] == ["mnist"]
    assert result["shots"] == 2 and result["train_images"] == {"mnist": 20}
    assert result["test_images"] == {"mnist": 10, "font_digits": 10} and result["num_classes"] == 10
    assert [(row["method"], row["source"]) for row in result["rows"]] == [
        ("repadapter-block", "mnist"),
        ("lora", "mnist"),
    ]
    for row in result["rows"]:
        assert set(row["scores"]) == {"mnist", "font_digits"}
        # each score is a share of 10 test images
        assert all(0 <= s <= 100 and abs(s / 10 - round(s / 10)) < 1e-9 for s in row["scores"].values())
        assert row["mean_other"] == statistics.fmean([row["scores"]["font_digits"]])
        summary = json.loads((runs / "mnist_2shot_seed0" / row["method"] / "summary.json").read_text())
        assert 100 * summary["test_score"] == row["scores"]["mnist"]  # the run's own test, reloaded
        assert summary["trained_params"] == row["trained_params"] and summary["task"] == "mnist_2shot_seed0"
    table = (out / "domains.md").read_text()
    assert table == render_domains(result) and "| lora | mnist |" in table and "2 shots per class" in table
    assert_refused(run_cli(*args), "already exists", "another --runs folder")  # nothing is overwritten


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        (["--domains", "mnist", "font_id"], "class counts differ (mnist 10, font_id 6)"),
        (["--domains", "mnist"], "at least two domains"),
        (["--domains", "mnist", "mnist"], "names a domain twice"),
        (["--domains", "mnist", "nowhere"], "unknown task 'nowhere'"),
        (["--sources", "font_id"], "--sources must name different domains among --domains"),
        (["--shots", "4"], "fewer than --shots 4 training images"),
        (["--task", "segmentation"], "compares classifiers"),
    ],
)
def test_bad_input_is_refused_before_training(suite, tmp_path, capsys, flags, phrase):
    args = ["bench", "domains", "--root", str(suite), "--out", str(tmp_path / "out")]
    args += ["--runs", str(tmp_path / "runs"), "--quiet", *TINY, *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("repadapter: error: ") and phrase in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_runs_inside_the_suite_and_zero_shots_are_refused(suite, tmp_path, capsys):
    args = ["bench", "domains", "--root", str(suite), "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*args, "--runs", str(suite / "runs")]) == 2
    assert f"overlap ({suite / 'runs'} lies in {suite})" in capsys.readouterr().err
    assert not (suite / "runs").exists()
    with pytest.raises(SystemExit) as stop:
        main([*args, "--runs", str(tmp_path / "runs"), "--shots", "0"])
    assert stop.value.code == 2 and "expected a whole number of at least 1" in capsys.readouterr().err
