"""The training loop: one model, one training split, a fixed schedule, resumable.

Only what an injection trains (adapters, head, extras) is checkpointed, together with the
optimizer, the RNG states and the metrics so far; the frozen backbone is rebuilt from its
source. A run resumed from its checkpoint ends with the same numbers as one never stopped.
"""

from __future__ import annotations

import functools
import json
import random
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from repadapter.errors import RepAdapterError
from repadapter.files import atomic_write, torch_load_safely
from repadapter.training import fsdp
from repadapter.training.config import TrainConfig
from repadapter.training.distributed import DistContext
from repadapter.training.runs import refuse_other_recipe
from repadapter.training.tasks import confusion, logits_of, task_kind
from repadapter.training.tasks.base import restrict

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_KEYS = {"epoch", "stop_epoch", "trainable", "optimizer", "scaler", "rng", "history", "evaluations"}
METRICS = "metrics.jsonl"


class TrainingDivergedError(RepAdapterError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class GlobalBatchSampler(Sampler[int]):
    """This process's share of each global batch of a seeded per-epoch permutation.

    The permutation depends on the seed and epoch only, global batch k is positions
    [k*B, (k+1)*B) of it, and process r takes every world_size-th of those, so any number of
    processes trains on the same global batches. Incomplete last batches are dropped.
    """

    def __init__(self, size: int, batch_size: int, rank: int, world_size: int, seed: int) -> None:
        if batch_size % world_size:
            raise RepAdapterError(
                f"batch size {batch_size} is not divisible by the {world_size} processes; the global "
                "batch is split evenly across them"
            )
        if size < batch_size:
            raise RepAdapterError(
                f"the training split has {size} images, fewer than one batch of {batch_size}"
            )
        self.size, self.batch_size, self.rank, self.world_size, self.seed = (
            size,
            batch_size,
            rank,
            world_size,
            seed,
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.size // self.batch_size) * (self.batch_size // self.world_size)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        order = order[: (self.size // self.batch_size) * self.batch_size]
        return iter(order[self.rank :: self.world_size].tolist())


@dataclass
class FitResult:
    """What a run measured: per-epoch records and its evaluations ``{split: [(epoch, score)]}``
    (the score is the task kind's metric: accuracy, or mIoU for segmentation)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    peak_memory_bytes: int = 0


def evaluate(
    model: nn.Module,
    samples: list[Any],
    num_classes: int,
    prep: dict[str, Any],
    cfg: TrainConfig,
    ctx: DistContext,
    classes: Sequence[int] = (),
) -> dict[str, float]:
    """The task kind's scores on ``samples`` (its metric among them), from one confusion matrix
    summed over the processes, each taking every world_size-th sample. ``classes``, when given,
    are the only classes predicted (the argmax over their logits: ImageNet-A and -R)."""
    kind = task_kind(cfg.task)
    mine = samples[ctx.rank :: ctx.world_size]
    real = len(mine)
    if fsdp.is_sharded(model) and samples:
        # fsdp: every process runs every forward (each gathers the blocks' shards), so each gets
        # as many samples; the ones added to even them out are left out of the counts
        mine = mine + [samples[0]] * (-(-len(samples) // ctx.world_size) - real)
    shard = kind.eval_dataset(mine, prep, cfg)
    # a dataset of inputs of different sizes (sliding-window segmentation) brings its own collate
    collate = getattr(shard, "collate_fn", None)
    loader = DataLoader(shard, batch_size=cfg.eval_batch_size, num_workers=cfg.workers, collate_fn=collate)
    was_training = model.training
    model.eval()
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    seen = 0
    # not inference mode for a sharded model: the buffers its forward gathers parameters into
    # would become inference tensors, which training afterwards cannot update
    no_grad = torch.no_grad() if fsdp.is_sharded(model) else torch.inference_mode()
    with no_grad, _autocast(cfg, ctx):
        for inputs, targets in loader:
            inputs = inputs.to(ctx.device)
            logits = kind.predict(model, inputs) if kind.predict else logits_of(model(inputs))
            if classes:
                logits = restrict(logits, classes)
            keep = max(0, min(len(targets), real - seen))
            seen += len(targets)
            matrix += confusion(logits[:keep], targets[:keep], num_classes)
    model.train(was_training)
    summed = ctx.all_sum([float(v) for v in matrix.flatten().tolist()])
    return kind.score(torch.tensor(summed).reshape(num_classes, num_classes))


def _autocast(cfg: TrainConfig, ctx: DistContext) -> Any:
    if cfg.amp == "none":
        return torch.autocast(ctx.device.type, enabled=False)
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def peak_memory(device: torch.device) -> int:
    """Peak bytes: CUDA memory allocated on ``device``, or on CPU the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rng_state() -> dict[str, Any]:
    """The RNG states as tensors and plain values, which ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    numpy_state = {
        "kind": str(kind),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state((saved["kind"], keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A run's checkpoint, read with ``weights_only=True``: tensors and plain values only, so a
    planted pickle is refused instead of run."""
    state = torch_load_safely(
        path, "It is not a checkpoint repadapter wrote; move it away or use another --out."
    )
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= state.keys():
        raise RepAdapterError(
            f"{path} is not a repadapter training checkpoint; move it away or use another --out"
        )
    return state


def check_amp(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse an autocast mode the device cannot run."""
    if cfg.amp == "fp16" and device.type != "cuda":
        raise RepAdapterError("amp fp16 needs a CUDA device; use --amp bf16 or --amp none on CPU")


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except that batch norms with frozen parameters stay in eval mode: a
    frozen backbone keeps its running statistics (which merging into them relies on), as in
    linear probing and parameter-efficient tuning of CNNs."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()
    return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(record) + "\n" for record in history)
    atomic_write(run_dir / METRICS, lambda tmp: tmp.write_text(text))


def fit(
    model: nn.Module,
    num_classes: int,
    train: list[Any],
    evals: dict[str, list[Any]],
    eval_epochs: set[int],
    cfg: TrainConfig,
    prep: dict[str, Any],
    ctx: DistContext,
    run_dir: Path,
    stop_epoch: int | None = None,
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` (already injected) on ``train`` for epochs 1..stop_epoch of a
    ``cfg.epochs``-long schedule, evaluating ``evals`` after each epoch in ``eval_epochs``.
    ``cfg.task`` names the kind of task: what the samples are and how they are scored.

    If ``run_dir`` holds a checkpoint, the run continues from it; a finished run just
    restores its final state.
    """
    stop_epoch = stop_epoch or cfg.epochs
    check_amp(cfg, ctx.device)
    fsdp.check(cfg, ctx)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.fsdp:  # moves each process's shards: no process holds the whole model on the device
        fsdp.shard(model, cfg, ctx)
    else:
        model.to(ctx.device)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=cfg.epochs,
        lr_min=cfg.min_lr,
        warmup_t=cfg.warmup_epochs,
        warmup_lr_init=cfg.warmup_lr,
    )
    scaler = torch.amp.GradScaler(enabled=cfg.amp == "fp16")
    result = FitResult()
    start_epoch = 1
    checkpoint = run_dir / CHECKPOINT
    if checkpoint.exists():
        state = read_checkpoint(checkpoint)
        refuse_other_recipe(state["config"], cfg, checkpoint)
        missing = trainable - set(state["trainable"])
        if missing or state["stop_epoch"] != stop_epoch:
            raise RepAdapterError(
                f"{checkpoint} belongs to another run (different trained parameters or length); "
                "use another output folder"
            )
        fsdp.load_whole_tensors(model, state["trainable"])
        fsdp.load_whole_optimizer_state(optimizer, state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        result.history, result.evaluations = state["history"], state["evaluations"]
        result.wall_seconds = state["wall_seconds"]
        start_epoch = state["epoch"] + 1

    kind = task_kind(cfg.task)
    if cfg.augment == "fewshot":  # classification only (TrainConfig checks)
        mixup = Mixup(
            mixup_alpha=cfg.mixup,
            cutmix_alpha=cfg.cutmix,
            label_smoothing=cfg.label_smoothing,
            num_classes=num_classes,
            mode="batch",
            prob=1.0,
            switch_prob=0.5,
        )
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = SoftTargetCrossEntropy()
    else:
        mixup, criterion = None, kind.loss
    sampler = GlobalBatchSampler(len(train), cfg.batch_size, ctx.rank, ctx.world_size, cfg.seed)
    loader = DataLoader(
        kind.train_dataset(train, prep, cfg),
        batch_size=cfg.batch_size // ctx.world_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=ctx.device.type == "cuda",
    )
    step_model: Callable[..., torch.Tensor] = model
    if ctx.world_size > 1 and not cfg.fsdp:
        step_model = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    if cfg.compile:
        step_model = torch.compile(step_model)

    show = progress and ctx.is_main
    epochs = tqdm(
        range(start_epoch, stop_epoch + 1),
        desc="epochs",
        disable=not show,
        initial=start_epoch - 1,
        total=stop_epoch,
    )
    for epoch in epochs:
        began = time.perf_counter()
        scheduler.step(epoch - 1)
        sampler.set_epoch(epoch)
        train_mode(model)
        loss_sum = correct = counted = seen = 0.0
        for step, (images, labels) in enumerate(
            tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not show)
        ):
            images, labels = (
                images.to(ctx.device, non_blocking=True),
                labels.to(ctx.device, non_blocking=True),
            )
            targets = labels
            if mixup is not None:
                images, targets = mixup(images, labels)
            with _autocast(cfg, ctx):
                logits = logits_of(step_model(images))
                loss = criterion(logits.float(), targets)
            finite = ctx.all_sum([float(torch.isfinite(loss).item())])[0] == ctx.world_size
            if not finite:
                kept = checkpoint if checkpoint.exists() else "none (first epoch)"
                raise TrainingDivergedError(
                    f"the training loss became {loss.item()} at epoch {epoch}, step {step + 1}; stopped. "
                    f"The last good checkpoint is {kept}. Lower --lr or --scale, or use --amp none."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.item() * len(labels)
            batch_counts = confusion(logits.detach(), labels, num_classes) if mixup is None else None
            correct += float(batch_counts.trace()) if batch_counts is not None else 0
            counted += float(batch_counts.sum()) if batch_counts is not None else 0
            seen += len(labels)
        loss_sum, correct, counted, seen = ctx.all_sum([loss_sum, correct, counted, seen])
        record: dict[str, Any] = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / seen,
            # top-1 accuracy over images, clips or (segmentation) labelled pixels
            "train_acc": None if mixup is not None else correct / max(counted, 1.0),
        }
        if epoch in eval_epochs:
            scores = {
                split: evaluate(model, samples, num_classes, prep, cfg, ctx)[kind.metric]
                for split, samples in evals.items()
            }
            for split, score in scores.items():
                result.evaluations.setdefault(split, []).append((epoch, score))
                record[f"{split}_{kind.metric}"] = score
            if on_eval is not None:
                on_eval(epoch, scores)
        result.wall_seconds += time.perf_counter() - began
        record["seconds"] = time.perf_counter() - began
        result.history.append(record)
        epochs.set_postfix(loss=f"{record['train_loss']:.4f}")
        # whole tensors (gathered by every process when sharded): a single-process checkpoint
        trained_now = fsdp.whole_tensors(model, trainable)
        optimizer_now = fsdp.whole_optimizer_state(optimizer)
        if ctx.is_main:
            state = {
                "epoch": epoch,
                "stop_epoch": stop_epoch,
                "trainable": trained_now,
                "optimizer": optimizer_now,
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "history": result.history,
                "evaluations": result.evaluations,
                "wall_seconds": result.wall_seconds,
                "config": cfg.to_dict(),
            }
            atomic_write(checkpoint, functools.partial(torch.save, state))
            _write_metrics(run_dir, result.history)
        ctx.barrier()
    result.peak_memory_bytes = peak_memory(ctx.device)
    return result
