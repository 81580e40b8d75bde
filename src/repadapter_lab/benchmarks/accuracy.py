"""`repadapter bench accuracy`: methods x suite tasks under one recipe, side by side.

Each method variant runs the whole suite with `run_vtab` (finished tasks are kept, so an
interrupted benchmark resumes) into ``<out>/<variant>/``; the comparison table gives, per
variant, every task's test accuracy, the group means, the paper's average (mean of the group
means), and the trained parameters in millions and as a share of the backbone; the plot puts
the average against the trained parameters, which is the trade-off people choose on.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from repadapter.errors import RepAdapterError
from repadapter.files import atomic_write
from repadapter.training.config import TrainConfig
from repadapter.training.data.vtab import GROUPS, suite_tasks
from repadapter.training.distributed import DistContext
from repadapter.training.methods import METHODS
from repadapter.training.vtab_run import fmt_accuracy, in_group_order, run_vtab

# What a variant changes in the recipe.
VARIANTS: dict[str, dict[str, Any]] = {
    "repadapter-block": {"method": "repadapter", "placement": "block"},
    "repadapter-attn": {"method": "repadapter", "placement": "attn"},
    **{name: {"method": name} for name in METHODS if name != "repadapter"},
    "linear-random-init": {"method": "linear", "pretrained": False},
}


def variant_config(base: TrainConfig, variant: str) -> TrainConfig:
    if variant not in VARIANTS:
        raise RepAdapterError(f"unknown method variant {variant!r}; variants: {', '.join(VARIANTS)}")
    return dataclasses.replace(base, **VARIANTS[variant])


def run_accuracy(
    root: str | Path,
    variants: list[str],
    base: TrainConfig,
    out_dir: Path,
    tasks: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every variant on the suite at ``root``; return the comparison (also per variant
    under ``out_dir``)."""
    ctx = DistContext(0, 1, torch.device("cpu" if base.device == "auto" else base.device))
    configs = {v: variant_config(base, v) for v in variants}  # all checked before any runs
    rows = {}
    for variant, cfg in configs.items():
        table = run_vtab(root, tasks, cfg, out_dir / variant, ctx, progress=progress)
        summaries = [json.loads((out_dir / variant / t / "summary.json").read_text()) for t in table["tasks"]]
        trained = statistics.fmean(s["trained_params"] for s in summaries)
        backbone = statistics.fmean(s["backbone_params"] for s in summaries)
        rows[variant] = {
            **table,
            "trained_params_m": trained / 1e6,
            "trained_percent_of_backbone": 100 * trained / backbone,
            "train_seconds": sum(s["wall_seconds"] for s in summaries),
            # A resumed benchmark reuses finished tasks: the commits their runs were made at.
            "task_commits": sorted({s.get("provenance", {}).get("git_commit", "unknown") for s in summaries}),
            "config": cfg.to_dict(),
        }
    return {"suite": list(suite_tasks(root)), "variants": rows}


def render_comparison(result: dict[str, Any]) -> str:
    """One row per variant: tasks by group, group means, paper average, trained parameters."""
    suite = result["suite"]
    rows = result["variants"]
    ordered = in_group_order(suite, next(iter(rows.values()))["task_groups"])
    head = ["method", *ordered, *(f"{g} mean" for g in GROUPS), "average", "trained (M)", "% of backbone"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    for variant, row in rows.items():
        cells = [variant, *(fmt_accuracy(row["tasks"].get(t)) for t in ordered)]
        cells += [fmt_accuracy(row["group_means"][g]) for g in GROUPS]
        cells += [f"**{fmt_accuracy(row['paper_average'])}**", f"{row['trained_params_m']:.3f}"]
        cells += [f"{row['trained_percent_of_backbone']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Accuracy in %, test split; average = mean of the three group means (the paper's)."]
    protocols = sorted({p for row in rows.values() for p in row["protocols"]})
    lines += ["Protocol: " + "; ".join(protocols)]
    return "\n".join(lines) + "\n"


def plot_comparison(result: dict[str, Any], path: Path) -> None:
    """Average accuracy against trained parameters (log x), one labelled point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    # Labels sit in a column right of the axes, in the order of the points' accuracy, each joined
    # to its point by a thin line: close points stay readable however many methods there are.
    rows = sorted(result["variants"].items(), key=lambda item: -item[1]["paper_average"])
    for k, (variant, row) in enumerate(rows):
        x, y = row["trained_params_m"], row["paper_average"]
        color = "tab:red" if variant.startswith("repadapter") else "tab:blue"
        ax.scatter([x], [y], color=color, zorder=3)
        ax.annotate(
            f"{variant} ({y:.1f})",
            (x, y),
            xytext=(1.03, 1 - (k + 0.5) / len(rows)),
            textcoords="axes fraction",
            va="center",
            fontsize=8,
            color=color,
            arrowprops={"arrowstyle": "-", "color": "0.7", "linewidth": 0.6},
        )
    ax.set_xscale("log")
    ax.set_xlabel("trained parameters (M, log scale; head included)")
    ax.set_ylabel("average accuracy (%, mean of group means)")
    ax.grid(True, which="both", alpha=0.3)
    fig.subplots_adjust(left=0.08, right=0.72, bottom=0.12, top=0.95)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
