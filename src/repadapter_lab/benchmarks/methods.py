"""`repadapter bench methods`: method variants side by side on one task of any kind.

Each variant trains once with `run_task` into ``<out>/<variant>/`` (a finished run is kept, so an
interrupted benchmark resumes). The table gives every score of the task's kind (accuracy; mIoU,
pixel and mean accuracy for segmentation), the trained parameters, and for adapter methods the
largest difference between the trained model's and its merged form's logits on test inputs: the
deployed model is the vanilla architecture and must compute the same thing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from repadapter.training.config import TrainConfig
from repadapter.training.data.lists import TaskData
from repadapter.training.distributed import DistContext
from repadapter.training.protocol import run_task
from repadapter.training.runs import finished_summary
from repadapter.training.tasks import logits_of, task_kind
from repadapter.tuner.adapter_files import load_adapter
from repadapter.tuner.merge import merge
from repadapter_lab.benchmarks.accuracy import variant_config

MERGE_CHECK_SAMPLES = 16


def merge_difference(task: TaskData, cfg: TrainConfig, adapter_file: Path) -> dict[str, float]:
    """Max |logit difference| between the adapter file loaded onto its base model and the same
    model merged, in eval mode on the first test samples, with the largest |logit| beside it."""
    kind = task_kind(cfg.task)
    unmerged = load_adapter(kind.build_model(cfg, task.num_classes), adapter_file).eval()
    merged = merge(unmerged).eval()
    prep = kind.preprocessing(unmerged, cfg.normalization)
    data = kind.eval_dataset(task.split("test")[:MERGE_CHECK_SAMPLES], prep, cfg)
    inputs = next(iter(DataLoader(data, batch_size=MERGE_CHECK_SAMPLES)))[0]
    with torch.inference_mode():
        a, b = logits_of(unmerged(inputs)), logits_of(merged(inputs))
    return {"max_abs_diff": float((a - b).abs().max()), "max_abs_logit": float(a.abs().max())}


def run_methods(
    task: TaskData, variants: list[str], base: TrainConfig, out_dir: Path, progress: bool = True
) -> dict[str, Any]:
    """Train and test every variant on ``task``; the comparison (runs kept under ``out_dir``)."""
    ctx = DistContext(0, 1, torch.device("cpu" if base.device == "auto" else base.device))
    configs = {v: variant_config(base, v) for v in variants}  # all checked before any runs
    rows = {}
    for variant, cfg in configs.items():
        run_dir = out_dir / variant
        summary = finished_summary(run_dir, cfg) or run_task(task, cfg, run_dir, ctx, progress=progress)
        adapter = run_dir / "adapter.safetensors"
        rows[variant] = {
            "test_scores": summary["test_scores"],
            "trained_params": summary["trained_params"],
            "trained_percent_of_backbone": summary["trained_percent_of_backbone"],
            "train_seconds": summary["wall_seconds"],
            "protocol": summary["protocol"],
            "merge_check": merge_difference(task, cfg, adapter) if adapter.exists() else None,
            "config": dataclasses.asdict(cfg),
        }
    return {
        "task": task.name,
        "task_kind": base.task,
        "metric": task_kind(base.task).metric,
        "num_classes": task.num_classes,
        "splits": {name: len(samples) for name, samples in task.splits.items()},
        "variants": rows,
    }


def render_methods(result: dict[str, Any]) -> str:
    """One row per variant: every score in %, trained parameters, merged-vs-unmerged difference."""
    rows = result["variants"]
    names = list(next(iter(rows.values()))["test_scores"])
    head = ["method", *names, "trained params", "% of backbone", "merged vs unmerged, max abs difference"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, row in rows.items():
        check = row["merge_check"]
        merged = (
            "-"
            if check is None
            else f"{check['max_abs_diff']:.1e} (logits up to {check['max_abs_logit']:.2g})"
        )
        cells = [variant, *(f"{100 * row['test_scores'][n]:.1f}" for n in names)]
        cells += [f"{row['trained_params']:,}", f"{row['trained_percent_of_backbone']:.2f}", merged]
        lines.append("| " + " | ".join(cells) + " |")
    splits = ", ".join(f"{k} {v}" for k, v in result["splits"].items())
    lines += [
        "",
        f"{result['task']} ({result['task_kind']}, {result['num_classes']} classes; {splits}): test split, "
        f"scores in %; model selection by {result['metric']}.",
        "Protocol: " + "; ".join(sorted({row["protocol"] for row in rows.values()})),
    ]
    return "\n".join(lines) + "\n"
