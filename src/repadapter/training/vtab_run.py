"""`repadapter vtab`: every task of VTAB-1k or the offline suite (or a chosen subset) and the
paper's table.

The table gives each task's test accuracy, the Natural / Specialized / Structured means, the
paper's average (the mean of the three group means) and the plain mean over tasks, with the
trained parameter counts and the protocol that produced the numbers.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from repadapter.files import atomic_write
from repadapter.training.config import TrainConfig
from repadapter.training.data.lists import TaskData, require_dir
from repadapter.training.data.vtab import (
    GROUPS,
    LAYOUT,
    VTAB_TASKS,
    VtabTask,
    chosen_tasks,
    load_vtab_task,
    suite_tasks,
)
from repadapter.training.distributed import DistContext
from repadapter.training.protocol import run_task
from repadapter.training.runs import finished_summary


def vtab_table(summaries: list[dict[str, Any]], suite: dict[str, VtabTask] = VTAB_TASKS) -> dict[str, Any]:
    """Group means, the paper's average and the plain mean (accuracies in percent), tasks in
    the suite's order."""
    by_task = {t: 100 * s["test_score"] for t in suite for s in summaries if s["task"] == t}
    groups = {
        group: statistics.fmean(accs) if accs else None
        for group in GROUPS
        for accs in [[by_task[t] for t, info in suite.items() if info.group == group and t in by_task]]
    }
    complete = [mean for mean in groups.values() if mean is not None]
    return {
        "tasks": by_task,
        "task_groups": {t: suite[t].group for t in by_task},
        "suite_size": len(suite),
        "group_means": groups,
        "paper_average": statistics.fmean(complete) if complete else None,
        "paper_average_is_partial": len(complete) < len(GROUPS) or len(by_task) < len(suite),
        "plain_mean": statistics.fmean(by_task.values()) if by_task else None,
        "adapter_params_m": statistics.fmean(s["adapter_params"] for s in summaries) / 1e6,
        "trained_params_m": statistics.fmean(s["trained_params"] for s in summaries) / 1e6,
        "protocols": sorted({s["protocol"] for s in summaries}),
    }


def fmt_accuracy(value: float | None) -> str:
    """An accuracy in % for a Markdown table; '-' where there is none."""
    return "-" if value is None else f"{value:.1f}"


def in_group_order(tasks: list[str], task_groups: dict[str, str]) -> list[str]:
    """``tasks`` grouped natural, specialized, structured, each group in the given order."""
    return [t for g in GROUPS for t in tasks if task_groups.get(t) == g]


def render_table(table: dict[str, Any]) -> str:
    """The table as Markdown, tasks in the paper's order."""
    lines = ["| group | task | accuracy (%) |", "|---|---|---|"]
    for group in GROUPS:
        for task, acc in table["tasks"].items():
            if table["task_groups"][task] == group:
                lines.append(f"| {group} | {task} | {fmt_accuracy(acc)} |")
        lines.append(f"| **{group} mean** | | **{fmt_accuracy(table['group_means'][group])}** |")
    partial = f" (partial: not all {table['suite_size']} tasks)" if table["paper_average_is_partial"] else ""
    average = fmt_accuracy(table["paper_average"])
    lines += [
        f"| **paper average** (mean of group means){partial} | | **{average}** |",
        f"| plain mean over {len(table['tasks'])} tasks | | {fmt_accuracy(table['plain_mean'])} |",
        "",
        f"Adapter parameters: {table['adapter_params_m']:.3f}M; trained with the head: "
        f"{table['trained_params_m']:.3f}M (mean over tasks).",
        "",
        "Protocol: " + "; ".join(table["protocols"]),
    ]
    return "\n".join(lines) + "\n"


def unfinished_tasks(root: str | Path, tasks: list[str] | None, out_dir: Path) -> list[TaskData]:
    """The chosen tasks of the suite at ``root`` that ``out_dir`` holds no summary of, each read
    and checked (every list, label and image)."""
    root = require_dir(root, "VTAB-1k root", LAYOUT)
    return [
        load_vtab_task(root / name)
        for name in chosen_tasks(root, tasks)
        if not (out_dir / name / "summary.json").is_file()
    ]


def run_vtab(
    root: str | Path,
    tasks: list[str] | None,
    cfg: TrainConfig,
    out_dir: Path,
    ctx: DistContext,
    progress: bool = True,
    loaded: Sequence[TaskData] = (),
) -> dict[str, Any]:
    """Run ``tasks`` (default: all of the suite found under ``root``) and write ``vtab_table.md``
    and ``vtab_results.json`` to ``out_dir``. Finished tasks (with a summary) are not rerun;
    tasks already read (``loaded``) are not read again."""
    from repadapter.provenance import provenance

    root = require_dir(root, "VTAB-1k root", LAYOUT)
    suite = suite_tasks(root)
    summaries = []
    read = {task.name: task for task in loaded}
    for name in chosen_tasks(root, tasks):
        done = finished_summary(out_dir / name, cfg)
        if done is not None:
            summaries.append(done)
            continue
        task = read[name] if name in read else load_vtab_task(root / name)
        summaries.append(run_task(task, cfg, out_dir / name, ctx, progress=progress))
    table = vtab_table(summaries, suite)
    if ctx.is_main:
        text = render_table(table)
        atomic_write(out_dir / "vtab_table.md", lambda tmp: tmp.write_text(text))
        payload = (
            json.dumps({"provenance": provenance(), "table": table, "config": cfg.to_dict()}, indent=2) + "\n"
        )
        atomic_write(out_dir / "vtab_results.json", lambda tmp: tmp.write_text(payload))
    return table
