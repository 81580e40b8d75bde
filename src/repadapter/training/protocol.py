"""Model selection for one task, and the run it reports.

Honest protocol (default, needs a validation split): for each candidate scale, train on
``train`` and evaluate ``val`` every ``eval_every`` epochs and at the end; the best
(scale, epoch) on val wins; retrain on ``trainval`` with that scale for that many epochs of
the same schedule; evaluate ``test`` once. ``--selection test`` reproduces the official
code's protocol instead: train on ``trainval``, evaluate ``test`` every ``eval_every``
epochs, report the best test accuracy. ``--selection none`` trains on ``trainval`` for the
full schedule at the one scale given and evaluates ``test`` once: the cheapest honest run.
Every output says which protocol made it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repadapter.errors import RepAdapterError, first_line
from repadapter.files import atomic_write, save_tensor_file, tensors_sha256
from repadapter.training import fsdp
from repadapter.training.activations import set_grad_checkpointing
from repadapter.training.config import SCALE_CANDIDATES, TrainConfig, config_of
from repadapter.training.data.lists import TaskData
from repadapter.training.data.vtab import VTAB_TASKS, paper_scale
from repadapter.training.distributed import DistContext
from repadapter.training.methods import method
from repadapter.training.tasks import task_kind
from repadapter.training.trainer import (
    FitResult,
    GlobalBatchSampler,
    check_amp,
    evaluate,
    fit,
    seed_everything,
)
from repadapter.tuner.adapter_files import save_adapter
from repadapter.tuner.inspection import count_parameters, has_adapters

HONEST = "validation-selected: scale and epoch chosen on val, retrained on train+val, test evaluated once"
SELECT_ON_TEST = (
    "SELECT-ON-TEST (official RepAdapter protocol): best test accuracy over evaluations every "
    "{every} epochs; optimistic, not a held-out estimate"
)
FINAL_EPOCH = "final epoch: no selection, trained on train+val for the full schedule, test evaluated once"
# What a run of a method without adapters saves, and the format its metadata names.
TRAINED_FILE = "trained.safetensors"
TRAINED_FORMAT = "repadapter trained tensors"


def candidate_scales(data: TaskData, cfg: TrainConfig) -> list[float]:
    """The scales a run tries: the search set, the official value, or the one given (one
    placeholder for methods without a scale)."""
    if not method(cfg.method).scaled:
        return [0.0]
    if cfg.scale == "auto":
        return list(SCALE_CANDIDATES)
    if cfg.scale == "paper":
        base = data.name if data.name in VTAB_TASKS else None
        if base is None:
            raise RepAdapterError(
                f"--scale paper needs a VTAB-1k task (official values exist only for those); "
                f"{data.name!r} is not one. Use --scale auto or a number."
            )
        return [paper_scale(base, cfg.placement)]
    return [float(cfg.scale)]


def build_model(cfg: TrainConfig, num_classes: int, scale: float) -> nn.Module:
    """The task kind's base model from its source (hub, package, local file, or random init),
    made ready to train by the run's method."""
    model = method(cfg.method).prepare(task_kind(cfg.task).build_model(cfg, num_classes), cfg, scale)
    return set_grad_checkpointing(model) if cfg.grad_checkpointing else model


def _eval_epochs(cfg: TrainConfig, stop: int) -> set[int]:
    return {e for e in range(cfg.eval_every, stop + 1, cfg.eval_every)} | {stop}


def _run(
    cfg: TrainConfig,
    data: TaskData,
    scale: float,
    train: str,
    evals: dict[str, str],
    run_dir: Path,
    ctx: DistContext,
    stop_epoch: int | None = None,
    progress: bool = True,
) -> tuple[nn.Module, FitResult, dict[str, Any]]:
    seed_everything(cfg.seed)
    model = build_model(cfg, data.num_classes, scale)
    prep = task_kind(cfg.task).preprocessing(model, cfg.normalization)
    stop = stop_epoch or cfg.epochs
    result = fit(
        model,
        data.num_classes,
        data.split(train),
        {k: data.split(v) for k, v in evals.items()},
        _eval_epochs(cfg, stop),
        cfg,
        prep,
        ctx,
        run_dir,
        stop_epoch=stop,
        progress=progress,
    )
    return model, result, prep


def backbone_source(cfg: TrainConfig) -> dict[str, Any]:
    """Where a run's base model comes from, as its adapter file records it: the model name and
    input size, pretrained weights or a local file, and the seed a random init (or a head that
    is not trained) was drawn with."""
    return {
        "model": cfg.model,
        "img_size": cfg.img_size,
        "pretrained": cfg.pretrained or cfg.checkpoint is not None,
        "checkpoint": cfg.checkpoint,
        "seed": cfg.seed,
    }


def _selection(data: TaskData, cfg: TrainConfig, scales: list[float]) -> str:
    """How ``run_task`` selects: ``"test"`` (on test), ``"val"`` (on val) or ``"final"`` (no
    selection: the full schedule at the one scale)."""
    if cfg.selection == "test":
        return "test"
    if cfg.selection == "val" and "val" in data.splits:
        return "val"
    if len(scales) > 1:
        raise RepAdapterError(
            f"task {data.name}: --selection {cfg.selection} without a validation split cannot choose "
            "a scale; give --scale <number>, use --selection val with a val split, or --selection test"
        )
    return "final"


def _final_split(data: TaskData) -> str:
    return "trainval" if "trainval" in data.splits else "train"


def check_run(data: TaskData, cfg: TrainConfig, ctx: DistContext, build: bool = True) -> None:
    """Refuse now what would stop `run_task` later: the scale and selection, each training split
    against the global batch, the test split, fp16 without CUDA, and (``build``) the model and
    method, built once and dropped."""
    scales = candidate_scales(data, cfg)
    selection = _selection(data, cfg, scales)
    trains = {"test": ["trainval"], "val": ["train", "trainval"], "final": [_final_split(data)]}[selection]
    for split in trains:
        GlobalBatchSampler(len(data.split(split)), cfg.batch_size, ctx.rank, ctx.world_size, cfg.seed)
    data.split("test")
    check_amp(cfg, ctx.device)
    fsdp.check(cfg, ctx)
    if build:
        build_model(cfg, data.num_classes, scales[0])


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a method without adapters trained: its trainable parameters and the buffers of the
    modules that hold them (a trained batch norm's running statistics), by state-dict name."""
    trained = set()
    for prefix, module in model.named_modules():
        own = {n for n, p in module.named_parameters(recurse=False) if p.requires_grad}
        if own:
            buffers = {n for n, _ in module.named_buffers(recurse=False)}
            trained |= {f"{prefix}.{n}" if prefix else n for n in own | buffers}
    return {k: v for k, v in model.state_dict().items() if k in trained}


def frozen_fingerprint(model: nn.Module) -> str:
    """SHA-256 of every state-dict tensor `trained_state` leaves out (names, dtypes, shapes and
    bytes, in name order): the frozen base a method trained on."""
    trained = set(trained_state(model))
    return tensors_sha256({n: t for n, t in model.state_dict().items() if n not in trained})


def save_trained(model: nn.Module, path: Path, cfg: TrainConfig, scale: float, num_classes: int) -> None:
    """The `trained_state` of a method without adapters, atomically, with what rebuilds the
    model it loads into (`load_trained`): the run's config, scale, classes and frozen base."""
    backbone = {**backbone_source(cfg), "sha256": frozen_fingerprint(model)}
    metadata = {
        "format": TRAINED_FORMAT,
        "config": json.dumps(cfg.to_dict()),
        "scale": repr(scale),
        "num_classes": str(num_classes),
        "backbone": json.dumps(backbone),
    }
    save_tensor_file(path, trained_state(model), metadata)


def load_trained(
    path: str | os.PathLike[str],
    metadata: dict[str, str],
    tensors: dict[str, torch.Tensor],
    kind: str,
    num_classes: int,
    model_name: str,
) -> nn.Module:
    """The model a ``trained.safetensors`` (``metadata``, ``tensors``) was saved from, for a
    a ``kind`` of task of ``num_classes`` and the model ``model_name``: its base built as its run
    built it (recorded config and seed), checked to be the frozen base it trained on, prepared
    by its method, with its trained tensors loaded."""
    try:
        cfg = config_of(json.loads(metadata["config"]))
        scale, classes = float(metadata["scale"]), int(metadata["num_classes"])
        record = json.loads(metadata["backbone"])
    except (KeyError, ValueError, TypeError) as err:
        raise RepAdapterError(f"{path} is a damaged trained-tensors file ({first_line(err)})") from err
    if (cfg.model, cfg.task, classes) != (model_name, kind, num_classes):
        raise RepAdapterError(
            f"{path} holds a {cfg.method} run of --model {cfg.model} on a {cfg.task} task of {classes} "
            f"classes; it cannot score --model {model_name} on a {kind} task of {num_classes} classes"
        )
    seed_everything(cfg.seed)
    model = build_model(cfg, classes, scale)
    if set(tensors) != set(trained_state(model)):
        raise RepAdapterError(
            f"{path} does not hold what --method {cfg.method} trains in {cfg.model} (another repadapter "
            "version wrote it?); retrain, or evaluate with that version"
        )
    if frozen_fingerprint(model) != record.get("sha256"):
        source = (
            f"checkpoint {cfg.checkpoint}"
            if cfg.checkpoint
            else "pretrained weights"
            if cfg.pretrained
            else f"a random init, seed {cfg.seed}"
        )
        raise RepAdapterError(
            f"{path} was trained on another backbone than the one its run's settings build now "
            f"({cfg.model}, {source}): those weights, or the library that draws them, changed"
        )
    model.load_state_dict(tensors, strict=False)
    return model


def trained_model(run_dir: Path, cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model that the finished `run_task` in ``run_dir`` trained with ``cfg``, rebuilt from its
    files, to score it on other data: the base model with ``adapter.safetensors`` loaded, or
    ``trained.safetensors`` through `load_trained`; built after seeding as the run built it, so a
    random init is the run's."""
    from repadapter.files import read_tensor_file_with_metadata
    from repadapter.training.runs import finished_summary
    from repadapter.tuner.adapter_files import load_adapter

    if finished_summary(run_dir, cfg) is None:
        raise RepAdapterError(f"{run_dir} holds no finished run (no summary.json); train it first")
    seed_everything(cfg.seed)
    if (run_dir / "adapter.safetensors").is_file():
        return load_adapter(
            task_kind(cfg.task).build_model(cfg, num_classes), run_dir / "adapter.safetensors"
        )
    path = run_dir / TRAINED_FILE
    metadata, tensors = read_tensor_file_with_metadata(path, "a run's trained tensors")
    return load_trained(path, metadata, tensors, cfg.task, num_classes, cfg.model)


def run_task(
    data: TaskData, cfg: TrainConfig, out_dir: Path, ctx: DistContext, progress: bool = True
) -> dict[str, Any]:
    """Select, train and test on ``data``; write ``summary.json`` and ``adapter.safetensors``
    (``trained.safetensors`` for methods without adapters, read back by `load_trained`)."""
    from repadapter.provenance import provenance

    out_dir = Path(out_dir)
    kind = task_kind(cfg.task)
    scales = candidate_scales(data, cfg)
    search: list[dict[str, Any]] = []
    selection = _selection(data, cfg, scales)
    if selection == "test":
        protocol = SELECT_ON_TEST.format(every=cfg.eval_every)
        best_test: tuple[float, int, float, nn.Module, FitResult, dict[str, Any]] | None = None
        for scale in scales:
            model, result, prep = _run(
                cfg,
                data,
                scale,
                "trainval",
                {"test": "test"},
                out_dir / f"scale_{scale:g}",
                ctx,
                progress=progress,
            )
            epoch, score = max(result.evaluations["test"], key=lambda es: es[1])
            search.append(
                {"scale": scale, "best_epoch": epoch, "test_score": score, "evaluations": result.evaluations}
            )
            if best_test is None or score > best_test[2]:
                best_test = (scale, epoch, score, model, result, prep)
        assert best_test is not None  # scales is never empty
        scale, epoch, best_score, model, result, prep = best_test
        test_scores = {kind.metric: best_score}
        note = (
            "adapter saved from the last epoch of the best scale's run; its reported epoch was picked on test"
        )
    elif selection == "val":
        protocol = HONEST
        best_val: tuple[float, int, float] | None = None
        for scale in scales:
            _, result, _ = _run(
                cfg,
                data,
                scale,
                "train",
                {"val": "val"},
                out_dir / f"search_scale_{scale:g}",
                ctx,
                progress=progress,
            )
            epoch, score = max(result.evaluations["val"], key=lambda es: (es[1], -es[0]))
            search.append(
                {"scale": scale, "best_epoch": epoch, "val_score": score, "evaluations": result.evaluations}
            )
            if best_val is None or score > best_val[2]:
                best_val = (scale, epoch, score)
        assert best_val is not None  # scales is never empty
        scale, epoch, _ = best_val
        model, result, prep = _run(
            cfg, data, scale, "trainval", {}, out_dir / "final", ctx, stop_epoch=epoch, progress=progress
        )
        test_scores = evaluate(model, data.split("test"), data.num_classes, prep, cfg, ctx)
        note = "adapter saved from the final run"
    else:
        protocol = FINAL_EPOCH
        scale, epoch = scales[0], cfg.epochs
        model, result, prep = _run(
            cfg, data, scale, _final_split(data), {}, out_dir / "final", ctx, progress=progress
        )
        test_scores = evaluate(model, data.split("test"), data.num_classes, prep, cfg, ctx)
        note = "adapter saved from the final run"

    counts = count_parameters(model)
    summary = {
        "task": data.name,
        "group": data.group,
        "task_kind": cfg.task,
        "protocol": protocol,
        "metric": kind.metric,
        "test_score": test_scores[kind.metric],
        "test_scores": test_scores,
        "method": cfg.method,
        "scale": scale if method(cfg.method).scaled else None,
        "epoch": epoch,
        "search": search,
        "trained_params": counts.trainable,
        "adapter_params": counts.adapter,
        "backbone_params": counts.backbone,
        "trained_percent_of_backbone": 100 * counts.trainable / counts.backbone,
        "wall_seconds": result.wall_seconds,
        "peak_memory_bytes": result.peak_memory_bytes,
        "preprocessing": prep,
        "note": note,
        "config": cfg.to_dict(),
        "world_size": ctx.world_size,
    }
    with fsdp.whole_state_dict(model, ctx):  # a sharded model's files are an unsharded one's
        if ctx.is_main and has_adapters(model):
            save_adapter(model, out_dir / "adapter.safetensors", backbone=backbone_source(cfg))
        elif ctx.is_main:
            save_trained(model, out_dir / TRAINED_FILE, cfg, scale, data.num_classes)
    if ctx.is_main:
        text = json.dumps({"provenance": provenance(), **summary}, indent=2) + "\n"
        atomic_write(out_dir / "summary.json", lambda tmp: tmp.write_text(text))
    ctx.barrier()
    return summary
