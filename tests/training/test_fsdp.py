"""Sharded training (--fsdp) on two CPU processes (gloo) against one unsharded process."""

import json
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors import safe_open
from safetensors.torch import load_file
from torch.distributed.tensor import DTensor

from repadapter import RepAdapterError
from repadapter.cli import main
from repadapter.training import distributed, fsdp
from repadapter.training.data import load_vtab_task
from repadapter.training.data.transforms import preprocessing
from repadapter.training.distributed import DistContext
from repadapter.training.protocol import build_model
from repadapter.training.trainer import fit, read_checkpoint, seed_everything
from tests.fixtures import TINY_CLI_FLAGS, make_vtab_task, tiny_recipe

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def test_two_sharded_processes_write_the_files_of_one(tmp_path):
    # 9 test images and evaluation batches of 2: one process gets 5 images (3 batches), the
    # other 4 (2 batches), so evaluation must even out the forwards of the sharded model
    make_vtab_task(tmp_path, "eurosat", train=16, val=4, test=9)
    common = ["-m", "repadapter.cli", "train", "--data", f"vtab:{tmp_path / 'eurosat'}", *TINY_CLI_FLAGS]
    common += ["--epochs", "2", "--scale", "1", "--selection", "none", "--eval-batch-size", "2"]
    common += ["--dropout", "0", "--drop-path", "0"]  # no randomness that differs per process
    single = subprocess.run(
        [sys.executable, *common, "--out", str(tmp_path / "one")], capture_output=True, text=True, timeout=300
    )
    assert single.returncode == 0, single.stderr
    sharded = subprocess.run(
        [*TORCHRUN, *common, "--fsdp", "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    one, two = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("one", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2) and two["config"]["fsdp"]
    assert two["test_scores"] == one["test_scores"]
    losses = [
        [json.loads(line)["train_loss"] for line in (tmp_path / run / "final" / "metrics.jsonl").open()]
        for run in ("one", "two")
    ]
    assert torch.allclose(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-5)
    files = [tmp_path / run / "adapter.safetensors" for run in ("one", "two")]
    a, b = (load_file(file) for file in files)
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype == torch.float32 for k in a)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    # the header (config, sites, and the backbone's fingerprint over every frozen tensor,
    # gathered from the shards) is the single process's, so eval and merge take the file alike
    (meta_a, meta_b) = (safe_open(file, "pt").metadata() for file in files)
    assert meta_a == meta_b and "sha256" in meta_b["repadapter"]
    # so merge takes the sharded run's file (its fingerprint check passes) to the same weights
    model = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--img-size", "32"]
    for run, file in zip(("one", "two"), files, strict=True):
        assert (
            main(["merge", *model, "--adapter", str(file), "--out", str(tmp_path / f"{run}.safetensors")])
            == 0
        )
    merged = [load_file(tmp_path / f"{run}.safetensors") for run in ("one", "two")]
    assert max((merged[0][k] - merged[1][k]).abs().max().item() for k in merged[0]) < 1e-4
    # the checkpoint holds whole tensors in the single-process layout
    ckpt_a, ckpt_b = (read_checkpoint(tmp_path / run / "final" / "checkpoint.pt") for run in ("one", "two"))
    assert ckpt_a["trainable"].keys() == ckpt_b["trainable"].keys()
    for index, entry in ckpt_a["optimizer"]["state"].items():
        for key, value in entry.items():
            other = ckpt_b["optimizer"]["state"][index][key]
            assert type(other) is torch.Tensor and other.shape == value.shape
            assert torch.allclose(value, other, rtol=1e-4, atol=1e-9)


def test_fsdp_in_one_process_is_refused(tmp_path):
    make_vtab_task(tmp_path, "eurosat", train=8, val=4, test=4)
    command = ["-m", "repadapter.cli", "train", "--data", f"vtab:{tmp_path / 'eurosat'}", *TINY_CLI_FLAGS]
    command += ["--epochs", "2", "--scale", "1", "--fsdp", "--out", str(tmp_path / "run")]
    run = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "--fsdp shards the model across the processes torchrun starts" in run.stderr
    assert "--no-fsdp" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"compile": True}, "--compile .*drop --compile"),
        ({"amp": "bf16"}, "--amp bf16; use --fsdp-dtype bf16"),
        ({"method": "lora"}, "--method lora .*without --fsdp"),
        ({"task": "segmentation"}, "--task segmentation .*without --fsdp"),
    ],
)
def test_combinations_fsdp_does_not_support_are_refused(settings, message):
    with pytest.raises(RepAdapterError, match=message):
        fsdp.check(tiny_recipe(fsdp=True, **settings), DistContext(0, 2, torch.device("cpu")))


def test_bf16_without_fsdp_is_refused():
    with pytest.raises(RepAdapterError, match="--fsdp-dtype bf16 applies to sharded training only"):
        fsdp.check(tiny_recipe(fsdp_dtype="bf16"), DistContext(0, 1, torch.device("cpu")))


# --- two processes started once (torch.multiprocessing) for the tests below: each process runs
# every job of JOBS through the engine's functions and saves what it measured (or its error) ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    ctx = distributed.setup("cpu")
    try:
        results = {}
        for job, run in JOBS.items():
            try:
                results[job] = run(ctx, Path(folder) / job)
            except Exception:  # reported by the test of that job
                results[job] = {"error": traceback.format_exc()}
                break  # the other process may be waiting in a collective: stop here
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        distributed.teardown()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict[str, list]:
    """``{job: [rank 0's result, rank 1's]}``, from one start of two processes."""
    folder = tmp_path_factory.mktemp("fsdp")
    for job in JOBS:
        make_vtab_task(folder / job, "eurosat", train=16, val=5)
    processes = mp.spawn(_worker, args=(_free_port(), str(folder)), nprocs=2, join=False)
    deadline = time.monotonic() + 900
    while not processes.join(timeout=5):
        if time.monotonic() > deadline:  # a process stuck in a collective: end both, fail
            for process in processes.processes:
                process.kill()
            pytest.fail("the two processes did not finish within 15 minutes")
    ranks = [json.loads((folder / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return {job: [r.get(job, {"error": "not run: an earlier job failed"}) for r in ranks] for job in JOBS}


def _results(two_processes: dict[str, list], job: str) -> list[dict]:
    for result in two_processes[job]:
        assert "error" not in result, result["error"]
    return two_processes[job]


def _bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def _local(param: torch.Tensor) -> torch.Tensor:
    return param.to_local() if isinstance(param, DTensor) else param


def _shard_sizes(ctx: DistContext, folder: Path) -> dict:
    cfg = tiny_recipe(fsdp=True)
    seed_everything(cfg.seed)
    model = build_model(cfg, 10, 1.0)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    whole = _bytes(p for n, p in model.named_parameters() if n in frozen)
    fsdp.shard(model, cfg, ctx)
    params = dict(model.named_parameters())
    local = _bytes(_local(params[n]) for n in frozen)
    sharded = all(isinstance(params[n], DTensor) for n in frozen)
    return {"whole": whole, "local": local, "all_sharded": sharded, "blocks": len(fsdp.blocks(model))}


def test_each_process_holds_half_of_the_backbone(two_processes):
    sizes = _results(two_processes, "shard")
    whole = sizes[0]["whole"]
    assert all(s["all_sharded"] and s["whole"] == whole and s["blocks"] == 12 for s in sizes)
    assert sizes[0]["local"] + sizes[1]["local"] == whole
    assert all(0.45 * whole < s["local"] < 0.55 * whole for s in sizes), (whole, sizes)


def _fit(cfg, task, run_dir: Path, ctx: DistContext, on_eval=None):
    seed_everything(cfg.seed)
    model = build_model(cfg, task.num_classes, 1.0)
    result = fit(
        model,
        task.num_classes,
        task.split("train"),
        {"val": task.split("val")},
        {1, 2},
        cfg,
        preprocessing(model),
        ctx,
        run_dir,
        on_eval=on_eval,
        progress=False,
    )
    return model, result


class StopError(Exception):
    """Raised by every process to stop a run between epochs."""


def _resume(ctx: DistContext, folder: Path) -> dict:
    task = load_vtab_task(folder / "eurosat")
    cfg = tiny_recipe(fsdp=True, epochs=2, eval_batch_size=2)  # adapter dropout and drop-path on
    model, straight = _fit(cfg, task, folder / "straight", ctx)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    straight_tensors = fsdp.whole_tensors(model, trained)

    def stop_after_epoch_one(epoch, scores):
        if epoch == 2:  # every process stops before epoch 2's checkpoint
            raise StopError

    with pytest.raises(StopError):
        _fit(cfg, task, folder / "resumed", ctx, on_eval=stop_after_epoch_one)
    stopped_at = read_checkpoint(folder / "resumed" / "checkpoint.pt")["epoch"]
    # resumed with activation checkpointing on (a runtime setting): the same numbers again
    model, resumed = _fit(tiny_recipe(fsdp=True, epochs=2, eval_batch_size=2, grad_checkpointing=True),
                          task, folder / "resumed", ctx)  # fmt: skip
    resumed_tensors = fsdp.whole_tensors(model, trained)
    return {
        "stopped_at": stopped_at,
        "losses": [[r["train_loss"] for r in run.history] for run in (straight, resumed)],
        "evaluations": [run.evaluations["val"] for run in (straight, resumed)],
        "largest_difference": max(
            (straight_tensors[n] - resumed_tensors[n]).abs().max().item() for n in trained
        ),
    }


def test_a_sharded_run_resumes_to_the_numbers_of_one_never_stopped(two_processes):
    for result in _results(two_processes, "resume"):
        assert result["stopped_at"] == 1
        straight, resumed = result["losses"]
        assert len(straight) == len(resumed) == 2 and torch.allclose(
            torch.tensor(straight), torch.tensor(resumed), rtol=1e-6
        )
        assert result["evaluations"][0] == result["evaluations"][1]
        assert result["largest_difference"] < 1e-6


def _bf16(ctx: DistContext, folder: Path) -> dict:
    task = load_vtab_task(folder / "eurosat")
    losses, seen = {}, {}
    for dtype in ("float32", "bf16"):
        cfg = tiny_recipe(fsdp=True, fsdp_dtype=dtype, epochs=2, dropout=0.0, drop_path=0.0)
        seed_everything(cfg.seed)
        model = build_model(cfg, task.num_classes, 1.0)
        block = model.blocks[0]
        adapter = next(m for n, m in block.named_modules() if n.endswith("repadapter"))

        def record(module, args, name=dtype, block=block, adapter=adapter):
            seen[name] = {
                "input": str(args[0].dtype),
                "block weight": str(block.attn.qkv.weight.dtype),
                "adapter weight": str(next(adapter.parameters()).dtype),
            }

        block.register_forward_pre_hook(record)
        run_dir = folder / dtype
        result = fit(model, task.num_classes, task.split("train"), {}, set(), cfg, preprocessing(model), ctx,
                     run_dir, progress=False)  # fmt: skip
        losses[dtype] = [r["train_loss"] for r in result.history]
        kept = {n: str(p.dtype) for n, p in model.named_parameters()}
        state = read_checkpoint(run_dir / "checkpoint.pt")
    return {
        "losses": losses,
        "seen": seen,
        "kept": kept,
        "checkpoint": sorted({str(t.dtype) for t in state["trainable"].values()}),
        "optimizer": sorted(
            {
                str(v.dtype)
                for entry in state["optimizer"]["state"].values()
                for k, v in entry.items()
                if k != "step"
            }
        ),
    }


def test_bf16_blocks_compute_in_bf16_and_keep_float32_adapters(two_processes):
    for result in _results(two_processes, "bf16"):
        assert result["seen"]["float32"] == dict.fromkeys(
            ("input", "block weight", "adapter weight"), "torch.float32"
        )
        assert result["seen"]["bf16"] == dict.fromkeys(
            ("input", "block weight", "adapter weight"), "torch.bfloat16"
        )
        # what the optimizer steps and what is saved stay float32, as do the frozen shards
        assert set(result["kept"].values()) == {"torch.float32"}
        assert result["checkpoint"] == result["optimizer"] == ["torch.float32"]
        f32, bf16 = result["losses"]["float32"], result["losses"]["bf16"]
        assert all(torch.isfinite(torch.tensor(bf16))) and bf16 != f32
        assert torch.allclose(torch.tensor(bf16), torch.tensor(f32), rtol=0.02), (bf16, f32)


JOBS = {"shard": _shard_sizes, "resume": _resume, "bf16": _bf16}
