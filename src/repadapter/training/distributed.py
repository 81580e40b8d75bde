"""One process or many: `torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK and we follow them.

CUDA runs use NCCL, CPU runs gloo. A global batch is split evenly across processes, and the
data order does not depend on the number of processes, so N processes see the same global
batches as one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from repadapter.errors import RepAdapterError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum ``values`` over all processes (identity for one process)."""
        if self.world_size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def setup(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes, if any, and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError as err:
        raise RepAdapterError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from err
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RepAdapterError(
                "device 'cuda' was asked for but no CUDA device is available; use --device cpu"
            )
        target = torch.device("cuda", local if world > 1 else torch.device(device).index or 0)
        torch.cuda.set_device(target)
    else:
        target = torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return DistContext(rank, world, target)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
