"""`repadapter bench loader`: both pipelines timed on the same split, with provenance."""

import json
import os
import subprocess
import sys

from tests.fixtures import make_vtab_task


def test_bench_loader_times_both_pipelines(tmp_path):
    root = make_vtab_task(tmp_path, "eurosat", train=24, val=8)
    out = tmp_path / "out"
    env_cache = {"REPADAPTER_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "repadapter.cli", "bench", "loader", "--data", f"vtab:{root}"]
    command += ["--img-size", "32", "--epochs", "2", "--batch", "8", "--cache", "disk", "--out", str(out)]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **env_cache}
    )
    assert run.returncode == 0, run.stderr
    result = json.loads((out / "loader.json").read_text())
    assert result["images"] == 24 and result["cache"] == "disk"
    assert set(result["pipelines"]) == {"decode every epoch", "decoded once"}
    assert all(row["images_per_second"] > 0 for row in result["pipelines"].values())
    assert {"command", "git_commit", "date_utc", "machine"} <= set(result["provenance"])
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npy"]
    assert "images/s" in (out / "loader.md").read_text()
