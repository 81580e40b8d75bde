"""`repadapter bench training`: per-method step time and memory, each in its own process."""

import json

from repadapter.cli import main


def test_training_cost_per_method_against_full_fine_tuning(tmp_path):
    out = tmp_path / "training"
    args = ["bench", "training", "--model", "vit_tiny6_patch4_32", "--methods", "full", "repadapter"]
    assert main([*args, "--batch", "4", "--steps", "2", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads((out / "training.json").read_text())
    rows = result["methods"]
    assert list(rows) == ["full", "repadapter"]
    assert rows["full"]["time_vs_full"] == 1.0 and rows["full"]["memory_vs_full"] == 1.0
    assert rows["full"]["trained_params"] == 2_693_192 + 100 * 192 + 100 - 1544  # 100 classes, not 8
    assert rows["repadapter"]["trained_params"] < rows["full"]["trained_params"] / 50
    for row in rows.values():
        assert row["step_seconds"]["min"] <= row["step_seconds"]["median"] <= row["step_seconds"]["max"]
        assert row["peak_memory_bytes"] > 50 * 2**20  # a whole process: torch, model, activations
    assert "| repadapter |" in (out / "training.md").read_text() and result["provenance"]["command"]
