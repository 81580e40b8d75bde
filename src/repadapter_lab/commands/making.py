"""``repadapter demo``, ``repadapter pretrain`` and ``repadapter data build``: the main job on
the in-house ViT, the recipe that made its weights, and the offline data sets' builders."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from repadapter.cli.flags import add_settings_flags, check_outputs, positive
from repadapter.errors import RepAdapterError
from repadapter_lab.demo import DemoSettings
from repadapter_lab.offline.suite import DEFAULT_SIZES
from repadapter_lab.pretrain import PretrainConfig


def _demo(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance, write_result
    from repadapter_lab.demo import DemoSettings, run_demo

    check_outputs(files=[args.json])
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
    check_outputs(folders=[str(out.parent)])
    out.parent.mkdir(parents=True, exist_ok=True)
    check_outputs(files=[f"{out}.safetensors", f"{out}.json"])
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
    check_outputs(folders=[args.root], flag="--root")
    given = {"train": args.train, "val": args.val, "test": args.test}
    sizes = {split: n for split, n in given.items() if n is not None}
    if args.suite == "offline":
        from repadapter_lab.offline.suite import build_suite

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


def add_demo(commands: argparse._SubParsersAction) -> None:
    """``demo`` (the ``repadapter.commands`` entry point ``demo``)."""
    demo = commands.add_parser(
        "demo",
        help="the main job: adapt the pretrained in-house ViT to an offline-suite task, merge, check, time",
        description="Build one offline-suite task (generated in code), train RepAdapter and a linear probe "
        "on the pretrained vit_tiny6_patch4_32.fmnist, reload the adapter file, merge, compare merged and "
        "unmerged logits on the test images, and time base, merged and unmerged models at batch 1.",
    )
    add_settings_flags(
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


def add_pretrain(commands: argparse._SubParsersAction) -> None:
    """``pretrain`` (the ``repadapter.commands`` entry point ``pretrain``)."""
    pretrain_cmd = commands.add_parser(
        "pretrain",
        help="pretrain the in-house ViT by distillation (how the shipped weights were made)",
        description="Train vit_tiny6_patch4_32 from scratch to reproduce the ImageNet EfficientNet-Lite0's "
        "pooled features and feature map on Fashion-MNIST (Debian package dataset-fashion-mnist) and "
        "scikit-image photographs, with a small Fashion-MNIST classification loss; the defaults are the "
        "shipped weights' recipe. Writes <out>.safetensors and <out>.json, a manifest with the command, "
        "data checksums, steps, wall time, the held-out cosine to the teacher and the source test accuracy.",
    )
    add_settings_flags(pretrain_cmd, PretrainConfig(), {"model": "timm architecture, from scratch"})
    pretrain_cmd.add_argument(
        "--out",
        default="runs/pretrain/vit_tiny6_patch4_32.fmnist",
        help="output path without suffix (default: %(default)s)",
    )
    pretrain_cmd.set_defaults(func=_pretrain)


def add_data_build(data: argparse._SubParsersAction) -> None:
    """``data build`` (the ``repadapter.commands`` entry point ``data.build``), in the ``data`` group."""
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
            type=positive,
            help=f"{split} images or clips (default: {size} for the suite; the segmentation and video "
            "builders' own otherwise)",
        )
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=_data_build)
