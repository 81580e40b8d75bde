"""`repadapter bench methods`: variants on one task, every score, the merge check, resumable."""

import json

from repadapter.cli import main
from repadapter_lab.benchmarks.methods import render_methods
from tests.fixtures import make_vtab_task


def test_variants_on_one_task_with_merge_check(tmp_path):
    make_vtab_task(tmp_path / "suite", "cifar", train=8, val=4, test=6, classes=3)
    out, runs = tmp_path / "results", tmp_path / "runs"
    args = ["bench", "methods", "--data", f"vtab:{tmp_path / 'suite' / 'cifar'}", "--out", str(out)]
    args += ["--runs", str(runs), "--methods", "repadapter-block", "linear", "--quiet"]
    args += ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--no-pretrained", "--epochs", "1"]
    args += [
        "--warmup-epochs",
        "0",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--selection",
        "none",
        "--scale",
        "1",
    ]
    assert main(args) == 0
    result = json.loads((out / "methods.json").read_text())
    rows = result["variants"]
    assert result["task_kind"] == "classification" and result["metric"] == "accuracy"
    assert set(rows) == {"repadapter-block", "linear"}
    assert all(0 <= row["test_scores"]["accuracy"] <= 1 for row in rows.values())
    assert rows["linear"]["merge_check"] is None  # no adapters
    check = rows["repadapter-block"]["merge_check"]
    assert check["max_abs_diff"] <= 1e-5 * max(1.0, check["max_abs_logit"])
    assert rows["linear"]["trained_params"] < rows["repadapter-block"]["trained_params"]
    assert (out / "methods.md").read_text() == render_methods(result)
    first = (runs / "linear" / "summary.json").read_text()
    assert main(args) == 0  # finished runs are kept
    assert (runs / "linear" / "summary.json").read_text() == first
