"""Forward latency of several models on one input, timed round-robin in one process.

Each round times every model once, starting from a different one, so drift of the machine
(frequency, other load) lands on all of them alike and their ratios stay meaningful.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LatencyStats:
    """Seconds per forward pass over the timed rounds."""

    median: float
    min: float
    max: float
    rounds: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def measure_latency(
    models: dict[str, nn.Module], inputs: torch.Tensor, rounds: int = 30, warmup: int = 3
) -> dict[str, LatencyStats]:
    """Time ``model(inputs)`` for every model, interleaved; CUDA work is synchronised."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}

    def sync() -> None:
        if inputs.is_cuda:
            torch.cuda.synchronize(inputs.device)

    with torch.inference_mode():
        for model in models.values():
            model.eval()
            for _ in range(warmup):
                model(inputs)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                sync()
                start = time.perf_counter()
                models[name](inputs)
                sync()
                times[name].append(time.perf_counter() - start)
    return {name: LatencyStats(statistics.median(t), min(t), max(t), len(t)) for name, t in times.items()}
