"""What a kind of task tells the training engine: how to build its model, serve its samples,
score its predictions. Classification, semantic segmentation and video classification share
the engine (schedule, checkpoints, selection protocol); only these pieces differ.

Every kind scores from one confusion matrix over the split (rows: target, columns:
prediction; targets equal to ``IGNORE_INDEX`` are left out), so evaluation sums across
processes the same way for images, pixels and clips.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from repadapter.training.config import TrainConfig

IGNORE_INDEX = 255


@dataclass(frozen=True)
class TaskKind:
    """One kind of task.

    Attributes:
        name: the ``--task`` value.
        metric: the name of the score that model selection maximises (a key of ``score``'s result).
        build_model: the base model for ``num_classes`` from the run's config (before the
            method prepares it).
        preprocessing: input size, mean, std (and any kind-specific settings) for a built model
            and a normalization name; recorded with the run.
        train_dataset / eval_dataset: a `Dataset` of ``(input, target)`` for a split's samples,
            the run's preprocessing and config.
        loss: the training loss of ``(logits, targets)``.
        score: the metrics of a confusion matrix, ``metric`` among them, as fractions.
        predict: logits of a batch of eval inputs (default: ``logits_of(model(x))``); a task
            may evaluate differently from how it trains (e.g. sliding windows).
    """

    name: str
    metric: str
    build_model: Callable[[TrainConfig, int], nn.Module]
    preprocessing: Callable[[nn.Module, str], dict[str, Any]]
    train_dataset: Callable[[Sequence[Any], dict[str, Any], TrainConfig], Dataset]
    eval_dataset: Callable[[Sequence[Any], dict[str, Any], TrainConfig], Dataset]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    score: Callable[[torch.Tensor], dict[str, float]]
    predict: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None


def logits_of(output: Any) -> torch.Tensor:
    """A model's logits: the tensor itself, or a Hugging Face output's ``.logits``."""
    return output if isinstance(output, torch.Tensor) else output.logits


def restrict(logits: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """``logits`` with every class outside ``classes`` at minus infinity (along dim 1), so that
    the argmax falls among ``classes``."""
    keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[list(classes)] = True
    shape = [1, -1] + [1] * (logits.dim() - 2)
    return logits.masked_fill(~keep.view(shape), float("-inf"))


def confusion(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts of (target, argmax over dim 1) pairs; works for
    (N, C) logits with (N,) targets and (N, C, H, W) logits with (N, H, W) targets."""
    predicted = logits.argmax(1).flatten()
    targets = targets.flatten().to(predicted.device)
    keep = targets != IGNORE_INDEX
    pairs = targets[keep] * num_classes + predicted[keep]
    return torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def accuracy(matrix: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy: the share of counted targets predicted right."""
    total = float(matrix.sum())
    return {"accuracy": float(matrix.trace()) / total if total else 0.0}
