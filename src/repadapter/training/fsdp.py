"""Sharded training (``--fsdp``): the frozen backbone split across the processes torchrun starts.

PyTorch's ``fully_shard`` (FSDP2) is applied to every block of the model (each child of a
container of two or more blocks of one kind: a ViT's ``blocks``, a Swin stage's ``blocks``, a
Hugging Face encoder's ``layer``), then to the whole model, so each process keeps about 1/N of
every parameter and gathers a block's weights only while that block runs. Adapters and head are
sharded with their blocks and train as usual: the gradients are averaged over the processes,
as under DDP, and each process steps its own shard of the optimizer state.

Everything written to disk is gathered into whole tensors first, so the checkpoint, the adapter
file and the trained tensors are the files a single-process run writes (and a run can resume
with or without ``--fsdp``, on any number of processes). ``fsdp_dtype bf16`` gathers each
block's parameters in bfloat16 and computes in bfloat16, while every process's shards (so the
backbone's bytes on disk and its fingerprint), the trained parameters, their gradients
(averaged in float32) and the optimizer state stay float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from repadapter.errors import RepAdapterError
from repadapter.training.config import TrainConfig
from repadapter.training.distributed import DistContext

FSDP_DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}
# what --fsdp was tested with (tests/training/test_fsdp.py); anything else is refused
FSDP_METHODS = ("repadapter",)
FSDP_TASKS = ("classification",)


def check(cfg: TrainConfig, ctx: DistContext) -> None:
    """Refuse ``--fsdp`` where it cannot run or was not tested, naming the fix."""
    if not cfg.fsdp:
        if cfg.fsdp_dtype != "float32":
            raise RepAdapterError(
                f"--fsdp-dtype {cfg.fsdp_dtype} applies to sharded training only; add --fsdp "
                "(under torchrun), or use --amp bf16 for bfloat16 compute in one process"
            )
        return
    if ctx.world_size < 2:
        raise RepAdapterError(
            "--fsdp shards the model across the processes torchrun starts, and this is one process; "
            "run under torchrun --nproc_per_node N (N >= 2), or pass --no-fsdp"
        )
    refusals = [
        (cfg.compile, "--compile (torch.compile of a sharded model); drop --compile"),
        (cfg.amp != "none", f"--amp {cfg.amp}; use --fsdp-dtype bf16 for bfloat16 compute, or --amp none"),
        (
            cfg.method not in FSDP_METHODS,
            f"--method {cfg.method} (tested: {', '.join(FSDP_METHODS)}); train it without --fsdp",
        ),
        (
            cfg.task not in FSDP_TASKS,
            f"--task {cfg.task} (tested: {', '.join(FSDP_TASKS)}); train it without --fsdp",
        ),
    ]
    for refused, what in refusals:
        if refused:
            raise RepAdapterError(f"--fsdp does not support {what}")


def blocks(model: nn.Module) -> list[nn.Module]:
    """The modules ``shard`` shards one by one, innermost first: each child of a ModuleList or
    Sequential of two or more children of one class that hold parameters."""
    found: list[nn.Module] = []
    for module in model.modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) < 2:
            continue
        kinds = {type(child) for child in module}
        if len(kinds) == 1 and all(any(True for _ in child.parameters()) for child in module):
            found.extend(module)
    ids = {id(m) for m in found}
    # nested blocks (a Swin stage's blocks inside the stages) are sharded before their parents
    return [m for m in reversed(list(model.modules())) if id(m) in ids]


def shard(model: nn.Module, cfg: TrainConfig, ctx: DistContext) -> nn.Module:
    """Shard ``model`` (built whole on the CPU) in place across the processes of ``ctx``; its
    shards and buffers move to ``ctx.device``. Call before making the optimizer."""
    found = blocks(model)
    if not found:
        raise RepAdapterError(
            f"--fsdp found no blocks to shard in {type(model).__name__} (no list of two or more "
            "blocks of one kind); train it without --fsdp"
        )
    dtype = FSDP_DTYPES[cfg.fsdp_dtype]
    policy = MixedPrecisionPolicy(
        param_dtype=None if dtype == torch.float32 else dtype, reduce_dtype=torch.float32
    )
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for block in found:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """A plain CPU copy of ``tensor``, gathered from every process when it is sharded (a
    collective: every process calls it for the same tensors in the same order)."""
    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu()


def whole_tensors(model: nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
    """The entries ``names`` of ``model``'s state dict as whole CPU tensors, on every process."""
    return {name: _whole(tensor) for name, tensor in model.state_dict().items() if name in names}


def whole_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with every sharded state tensor gathered whole: what the
    optimizer of a single-process run holds, on every process."""
    state = optimizer.state_dict()
    state["state"] = {
        index: {key: _whole(value) if isinstance(value, DTensor) else value for key, value in entry.items()}
        for index, entry in state["state"].items()
    }
    return state


def _like(tensor: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``tensor`` (whole) sharded as ``param`` is, when ``param`` is sharded."""
    if not isinstance(param, DTensor):
        return tensor
    whole = tensor.to(device=param.device, dtype=param.dtype)
    return distribute_tensor(whole, param.device_mesh, param.placements)


def load_whole_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy whole parameters (a checkpoint's) into ``model``, sharded or not."""
    if not is_sharded(model):
        model.load_state_dict(tensors, strict=False)
        return
    with torch.no_grad():
        for name, tensor in tensors.items():
            param = model.get_parameter(name)
            param.copy_(_like(tensor, param))


def load_whole_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a single-process optimizer state (``whole_optimizer_state``'s) into ``optimizer``,
    sharding each state tensor as its parameter is sharded."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sharded = {
        index: {
            # the moments are shaped like their parameter; "step" is a count
            key: _like(value, params[index]) if key != "step" and isinstance(value, torch.Tensor) else value
            for key, value in entry.items()
        }
        for index, entry in state["state"].items()
    }
    optimizer.load_state_dict({**state, "state": sharded})


@contextmanager
def whole_state_dict(model: nn.Module, ctx: DistContext) -> Iterator[None]:
    """Inside, ``model.state_dict()`` on the main process returns every tensor whole, on the CPU
    (gathered once, by every process, on entry): the files written from it (`save_adapter`,
    its backbone fingerprint) are those of an unsharded model. Nothing changes for a model that
    is not sharded."""
    if not is_sharded(model):
        yield
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if ctx.is_main:
        model.state_dict = lambda *args, **kwargs: dict(whole)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        model.__dict__.pop("state_dict", None)
