"""`repadapter bench training`: what one training step costs with each method, against full
fine-tuning and against the floor, on the same model and batch.

The floor is what any method that trains something inside every block must pay: back-propagation
through the whole frozen backbone, with only the first block's input requiring a gradient. Beside
the library's methods, the table can hold that floor, RepAdapter with activation checkpointing,
and PEFT's own LoRA (the peer a user would pick instead).

Each method runs in a fresh subprocess, so its peak memory (CUDA: allocated; CPU: the process's
peak RSS) is its own: model, gradients, optimizer state and the activations autograd keeps.
The activations alone are also counted exactly (the tensors autograd saves for backward, each
storage once, parameters excluded): a number that neither the allocator nor the device blurs.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from repadapter.families.base import head_of
from repadapter.training.methods import METHODS, method


def _first_block(model: nn.Module) -> nn.Module:
    for name in ("blocks", "stages", "layers"):
        blocks = getattr(model, name, None)
        if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks):
            return blocks[0]
    raise ValueError(
        f"the floor needs a model with blocks, stages or layers; {type(model).__name__} has none"
    )


def _floor(model: nn.Module) -> nn.Module:
    """Everything frozen; the first block's input requires a gradient, so backward runs through
    every block without any weight gradient."""
    model.requires_grad_(False)
    _first_block(model).register_forward_pre_hook(
        lambda _, args: (args[0].detach().requires_grad_(), *args[1:])
    )
    return model


def _repadapter_checkpointed(model: nn.Module) -> nn.Module:
    from repadapter.training.activations import set_grad_checkpointing
    from repadapter.training.config import TrainConfig

    return set_grad_checkpointing(method("repadapter").prepare(model, TrainConfig(), 1.0))


def _peft_lora(model: nn.Module) -> nn.Module:
    """PEFT's LoRA on the attention's qkv projection, rank 8, the head trained too."""
    from peft import LoraConfig, get_peft_model

    head = head_of(model)[0]
    return get_peft_model(
        model, LoraConfig(r=8, lora_alpha=8, target_modules=["qkv"], modules_to_save=[head])
    )


# Set-ups that are no training method of ours, measured beside them.
VARIANTS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "floor": _floor,
    "repadapter+checkpointing": _repadapter_checkpointed,
    "peft-lora": _peft_lora,
}
# Every method and variant, full fine-tuning first: the others are measured against it.
TRAINED_METHODS = ("full", "floor", *(name for name in METHODS if name != "full"), *list(VARIANTS)[1:])


def _prepare(model: nn.Module, name: str) -> nn.Module:
    from repadapter.training.config import TrainConfig

    if name in VARIANTS:
        return VARIANTS[name](model)
    return method(name).prepare(model, TrainConfig(method=name), 1.0)


def saved_activation_bytes(model: nn.Module, loss: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for the backward of ``loss()``, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss()
    return sum(saved.values())


def measure_step(spec: str, method_name: str, batch: int, steps: int, device: str = "cpu") -> dict[str, Any]:
    """Median seconds of a full training step (forward, backward, AdamW) after one warm-up step,
    and the peak memory, for ``method_name`` on a randomly initialised ``spec``."""
    from timm.data import resolve_data_config

    from repadapter.families.factory import create
    from repadapter.training.trainer import peak_memory

    where = torch.device(device)
    torch.manual_seed(0)
    model = create(spec, pretrained=False, num_classes=100)
    size = resolve_data_config({}, model=model)["input_size"]
    model = _prepare(model, method_name).to(where).train()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3) if trained else None  # the floor trains nothing
    x = torch.randn(batch, *size, device=where)
    y = torch.randint(0, 100, (batch,), device=where)

    def step() -> float:
        if where.type == "cuda":
            torch.cuda.synchronize(where)
        began = time.perf_counter()
        loss = functional.cross_entropy(model(x), y)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        if where.type == "cuda":
            torch.cuda.synchronize(where)
        return time.perf_counter() - began

    step()
    times = [step() for _ in range(steps)]
    activations = saved_activation_bytes(model, lambda: functional.cross_entropy(model(x), y))
    return {
        "method": method_name,
        "trained_params": sum(p.numel() for p in trained),
        "step_seconds": {"median": statistics.median(times), "min": min(times), "max": max(times)},
        "peak_memory_bytes": peak_memory(where),
        "saved_activation_bytes": activations,
    }


def run_training_cost(
    spec: str, methods: Sequence[str], batch: int, steps: int, threads: int, device: str = "cpu"
) -> dict[str, Any]:
    """`measure_step` for every method, each in its own process; ratios to full fine-tuning."""
    rows = {}
    for name in methods:
        code = (
            f"import json, torch; torch.set_num_threads({threads}); "
            "from repadapter_lab.benchmarks.training import measure_step; "
            f"print(json.dumps(measure_step({spec!r}, {name!r}, {batch}, {steps}, {device!r})))"
        )
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        if run.returncode:
            raise RuntimeError(f"measuring {name} on {spec} failed:\n{run.stderr[-2000:]}")
        rows[name] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{spec} {name}: {rows[name]['step_seconds']['median']:.3f} s/step", flush=True)
    for reference in ("full", "floor"):
        if reference not in rows:
            continue
        base = rows[reference]
        for row in rows.values():
            row[f"time_vs_{reference}"] = row["step_seconds"]["median"] / base["step_seconds"]["median"]
            row[f"memory_vs_{reference}"] = row["peak_memory_bytes"] / base["peak_memory_bytes"]
            row[f"activations_vs_{reference}"] = (
                row["saved_activation_bytes"] / base["saved_activation_bytes"]
            )
    return {
        "model": spec,
        "batch": batch,
        "steps": steps,
        "threads": threads,
        "device": device,
        "methods": rows,
    }


def render_training_cost(result: dict[str, Any]) -> str:
    head = [
        "method",
        "trained params",
        "step (s, median)",
        "time vs full",
        "peak memory (MiB)",
        "memory vs full",
        "saved activations (MiB)",
        "activations vs full",
        "time vs floor",
        "activations vs floor",
    ]
    lines = [
        f"{result['model']}, batch {result['batch']}, {result['device']}, {result['threads']} threads, "
        f"median of {result['steps']} steps after one warm-up",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, row in result["methods"].items():
        cells = [name, f"{row['trained_params']:,}", f"{row['step_seconds']['median']:.3f}"]
        cells += [f"{row.get('time_vs_full', float('nan')):.2f}", f"{row['peak_memory_bytes'] / 2**20:.0f}"]
        cells += [f"{row.get('memory_vs_full', float('nan')):.2f}"]
        cells += [f"{row['saved_activation_bytes'] / 2**20:.0f}"]
        cells += [f"{row.get('activations_vs_full', float('nan')):.2f}"]
        cells += [
            f"{row.get('time_vs_floor', float('nan')):.2f}",
            f"{row.get('activations_vs_floor', float('nan')):.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "CPU memory is the process's peak RSS (model, gradients, optimizer state, activations); saved "
        "activations are the tensors autograd keeps for backward, counted exactly. The floor: the frozen "
        "backbone, back-propagated from the loss to the first block's input.",
    ]
    return "\n".join(lines) + "\n"
