"""`repadapter bench probe`: what a backbone's frozen features hold, measured to convergence.

The suite recipe's linear probe is a short SGD run, so it also rewards features that are quick
to train on. This probe fits a multinomial logistic regression on the frozen pooled features
until it converges (full-batch L-BFGS on standardised features), picks the L2 strength on val
(train800 -> val200), refits on train+val and tests once. It takes minutes on a CPU, so a
pretraining recipe can be judged against a random-init backbone of the same shape before any
fine-tuning is spent on it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader

from repadapter.families.factory import create_base
from repadapter.training.data.lists import ImageListDataset, Sample, TaskData, require_dir
from repadapter.training.data.transforms import eval_transform, preprocessing
from repadapter.training.data.vtab import GROUPS, LAYOUT, chosen_tasks, load_vtab_task, suite_tasks
from repadapter.training.vtab_run import fmt_accuracy, in_group_order, vtab_table

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
SPLITS = ("train", "val", "trainval", "test")


def task_inputs(task: TaskData, prep: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Every distinct image of ``task``'s splits once, preprocessed, and each split's rows in it
    (train+val lists the train and val images again: they are decoded once)."""
    paths: dict[Path, int] = {}
    rows = {
        name: torch.tensor([paths.setdefault(s.path, len(paths)) for s in task.split(name)])
        for name in SPLITS
    }
    samples = [Sample(path, 0, str(path)) for path in paths]
    loader = DataLoader(ImageListDataset(samples, eval_transform(prep)), batch_size=250)
    return torch.cat([images for images, _ in loader]), rows


def features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's pooled features (before its classifier) for ``images``, in order."""
    model.eval()
    with torch.inference_mode():
        return torch.cat(
            [
                model.forward_head(model.forward_features(batch), pre_logits=True)  # type: ignore[operator]
                for batch in images.split(250)
            ]
        )


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float) -> nn.Linear:
    """Multinomial logistic regression with an L2 penalty on the weight, fitted to convergence in
    float64 (full-batch L-BFGS)."""
    layer = nn.Linear(x.shape[1], num_classes, dtype=torch.float64)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    x, y = x.double(), y.long()
    optimizer = torch.optim.LBFGS(
        layer.parameters(), lr=1, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = functional.cross_entropy(layer(x), y) + l2 * layer.weight.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    return layer


def _standardised(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return [(t - mean) / std for t in (train, *others)]


def _accuracy(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (layer(x.double()).argmax(-1) == y).double().mean().item()


def probe_task(
    model: nn.Module,
    task: TaskData,
    images: torch.Tensor,
    rows: dict[str, torch.Tensor],
    l2_grid: tuple[float, ...] = L2_GRID,
) -> dict[str, Any]:
    """Val-selected L2 strength, then train+val -> test accuracy, on ``task_inputs``' images."""
    feats = features(model, images)
    split = {name: feats[index] for name, index in rows.items()}
    labels = {name: torch.tensor([s.label for s in task.split(name)]) for name in SPLITS}
    train, val = _standardised(split["train"], split["val"])
    val_acc = {
        l2: _accuracy(fit_logistic(train, labels["train"], task.num_classes, l2), val, labels["val"])
        for l2 in l2_grid
    }
    best = max(l2_grid, key=lambda l2: (val_acc[l2], l2))  # ties: the stronger penalty
    trainval, test = _standardised(split["trainval"], split["test"])
    layer = fit_logistic(trainval, labels["trainval"], task.num_classes, best)
    return {
        "task": task.name,
        "l2": best,
        "val_acc": {str(k): v for k, v in val_acc.items()},
        "test_score": _accuracy(layer, test, labels["test"]),
    }


def run_probe(
    root: str | os.PathLike[str],
    model_name: str,
    backbones: dict[str, str | None],
    tasks: list[str] | None = None,
) -> dict[str, Any]:
    """Probe every task under ``root`` with each backbone: ``{label: checkpoint}`` where the
    checkpoint is ``"pretrained"`` (the model's own weights), ``"random"`` or a weights file.
    Each task's images are decoded once for all backbones."""
    root = require_dir(root, "suite", LAYOUT)
    suite = suite_tasks(root)
    chosen = chosen_tasks(root, tasks)
    models = {}
    for label, source in backbones.items():
        checkpoint = None if source in ("pretrained", "random") else source
        torch.manual_seed(0)  # the random-init backbone is the same one every time
        models[label] = create_base(model_name, 0, pretrained=source == "pretrained", checkpoint=checkpoint)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in backbones}
    for name in chosen:
        task = load_vtab_task(root / name)
        decoded: dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}  # by preprocessing
        for label, model in models.items():
            prep = preprocessing(model)
            key = json.dumps(prep, sort_keys=True)
            if key not in decoded:
                decoded[key] = task_inputs(task, prep)
            runs[label].append(probe_task(model, task, *decoded[key]))
    rows = {}
    for label, source in backbones.items():
        summaries = [
            {**r, "adapter_params": 0, "trained_params": 0, "protocol": "probe"} for r in runs[label]
        ]
        table = vtab_table(summaries, {t: suite[t] for t in chosen})
        rows[label] = {
            "source": source,
            "runs": runs[label],
            **{k: table[k] for k in ("tasks", "task_groups", "group_means", "paper_average")},
        }
    return {"model": model_name, "suite": chosen, "backbones": rows}


def render_probe(result: dict[str, Any]) -> str:
    """One row per backbone: tasks by group, group means, the paper's average."""
    rows = result["backbones"]
    ordered = in_group_order(result["suite"], next(iter(rows.values()))["task_groups"])
    head = ["backbone", *ordered, *(f"{g} mean" for g in GROUPS), "average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, row in rows.items():
        cells = [
            label,
            *(fmt_accuracy(row["tasks"][t]) for t in ordered),
            *(fmt_accuracy(row["group_means"][g]) for g in GROUPS),
        ]
        lines.append("| " + " | ".join([*cells, f"**{fmt_accuracy(row['paper_average'])}**"]) + " |")
    lines += [
        "",
        f"{result['model']}: logistic regression on frozen pooled features, fitted to convergence "
        "(L-BFGS), L2 picked on val, refitted on train+val; test accuracy in %.",
    ]
    return "\n".join(lines) + "\n"
