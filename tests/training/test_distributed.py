"""Two CPU processes on gloo (through torchrun) train like one process at the same global batch."""

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.fixtures import TINY_CLI_FLAGS, make_vtab_task


def test_two_gloo_processes_match_one(tmp_path):
    make_vtab_task(tmp_path, "eurosat", train=32, val=8, test=16)
    data = f"vtab:{tmp_path / 'eurosat'}"
    common = [
        "-m",
        "repadapter.cli",
        "train",
        "--data",
        data,
        *TINY_CLI_FLAGS,
        "--epochs",
        "3",
        "--scale",
        "1",
    ]
    common += [
        "--eval-every",
        "1",
        "--dropout",
        "0",
        "--drop-path",
        "0",
    ]  # no randomness that differs per process
    single = subprocess.run(
        [sys.executable, *common, "--out", str(tmp_path / "one")], capture_output=True, text=True, timeout=300
    )
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    double = subprocess.run(
        [*torchrun, *common, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300
    )
    assert double.returncode == 0, double.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["test_score"] == one["test_score"] and two["epoch"] == one["epoch"]
    losses = [
        [json.loads(line)["train_loss"] for line in (tmp_path / run / "final" / "metrics.jsonl").open()]
        for run in ("one", "two")
    ]
    assert torch.allclose(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-4)
    a, b = (load_file(tmp_path / run / "adapter.safetensors") for run in ("one", "two"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
