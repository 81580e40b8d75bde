import time

import pytest
import torch
from torch import nn

from repadapter_lab.benchmarks.latency import measure_latency


class Sleeper(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


def test_slower_models_measure_slower_and_stats_are_ordered():
    stats = measure_latency(
        {"fast": Sleeper(0.0), "slow": Sleeper(0.004)}, torch.zeros(1), rounds=6, warmup=1
    )
    assert stats["slow"].median > stats["fast"].median + 0.003
    for s in stats.values():
        assert s.min <= s.median <= s.max and s.rounds == 6


def test_models_are_timed_in_eval_mode():
    model = nn.Dropout(0.5).train()
    measure_latency({"m": model}, torch.ones(4), rounds=1, warmup=0)
    assert not model.training


def test_bad_round_counts_are_refused():
    with pytest.raises(ValueError, match="rounds >= 1"):
        measure_latency({"m": Sleeper(0)}, torch.zeros(1), rounds=0)
