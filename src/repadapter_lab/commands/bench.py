"""``repadapter bench ...``: the lab's benchmarks (`repadapter_lab.benchmarks`), each writing a
Markdown table and a JSON result with provenance under its results folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from repadapter.cli.flags import add_data_flags, check_outputs, non_negative, positive
from repadapter.cli.train import add_recipe_flags, given_recipe, recipe_of
from repadapter.errors import RepAdapterError
from repadapter.families.factory import IN_HOUSE_VIT
from repadapter_lab.benchmarks.accuracy import VARIANTS
from repadapter_lab.benchmarks.domains import DIGIT_DOMAINS, DOMAIN_SHOTS, DOMAIN_VARIANTS
from repadapter_lab.benchmarks.latency import LATENCY_MODELS, TIMED_METHODS
from repadapter_lab.benchmarks.training import TRAINED_METHODS


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

    check_outputs(folders=[args.out])
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

    check_outputs(folders=[args.out, args.runs])
    made_by = provenance()
    args.task = args.task or data_task(args.data)
    cfg = recipe_of(args)
    task = load_task(args.data, args.shots, args.fewshot_seed)
    result = run_methods(task, args.methods, cfg, Path(args.runs), progress=not args.quiet)
    _write_bench(Path(args.out), "methods", render_methods(result), result, made_by)


def _bench_latency(args: argparse.Namespace) -> None:
    import torch

    from repadapter.provenance import provenance
    from repadapter_lab.benchmarks.latency import plot_latency, render_latency, run_latency

    check_outputs(folders=[args.out])
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

    check_outputs(folders=[args.out])
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

    check_outputs(folders=[args.out])
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


def _bench_domains(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance
    from repadapter.training.config import config_of
    from repadapter_lab.benchmarks.domains import DOMAIN_RECIPE, render_domains, run_domains

    check_outputs(folders=[args.out, args.runs])
    made_by = provenance()
    cfg = config_of({**DOMAIN_RECIPE, **given_recipe(args)})
    result = run_domains(
        args.root,
        args.domains,
        args.sources or args.domains,
        args.methods,
        cfg,
        args.shots,
        args.fewshot_seed,
        Path(args.runs),
        progress=not args.quiet,
    )
    _write_bench(Path(args.out), "domains", render_domains(result), result, made_by)


def add_command(commands: argparse._SubParsersAction) -> None:
    """The ``bench`` group and its benchmarks (the ``repadapter.commands`` entry point ``bench``)."""
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
    accuracy.add_argument("--img-size", type=positive, help="input size (default: the model's own)")
    accuracy.add_argument("--epochs", type=positive, help="override the suite recipe's epochs")
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
    add_data_flags(methods)
    add_recipe_flags(methods)
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
        "--batches", nargs="+", type=positive, default=[1, 8, 64], help="(default: %(default)s)"
    )
    latency.add_argument(
        "--rounds", type=positive, default=40, help="interleaved rounds at batch 1, fewer for bigger batches"
    )
    latency.add_argument("--methods", nargs="+", default=list(TIMED_METHODS), choices=list(TIMED_METHODS))
    latency.add_argument("--threads", type=positive, help="CPU threads (default: torch's)")
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
    training.add_argument("--batch", type=positive, default=8, help="(default: %(default)s)")
    training.add_argument(
        "--steps", type=positive, default=3, help="timed steps after one warm-up (default: %(default)s)"
    )
    training.add_argument("--threads", type=positive, default=2, help="CPU threads (default: %(default)s)")
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

    domains = bench.add_parser(
        "domains",
        help="domain generalization: adapt on K shots of one digit domain, test on the others",
        description="For each source domain (a task folder of the suite at --root), draw --shots training "
        "images per class, train each method variant once on them, and score it on the test split of "
        "every domain (the source's own for reference). Writes <out>/domains.md and domains.json. The "
        "recipe defaults to the in-house ViT, 40 epochs of batch 32, scale 1, no selection; flags win.",
    )
    domains.add_argument("--root", default="data/offline", help="suite folder (default: %(default)s)")
    domains.add_argument(
        "--domains",
        nargs="+",
        default=list(DIGIT_DOMAINS),
        help="task folders of one label space (default: %(default)s)",
    )
    domains.add_argument("--sources", nargs="+", help="the domains to adapt on (default: every domain)")
    domains.add_argument(
        "--shots",
        type=positive,
        default=DOMAIN_SHOTS,
        help="training images per class (default: %(default)s)",
    )
    domains.add_argument(
        "--fewshot-seed", type=non_negative, default=0, help="seed of the draw (default: %(default)s)"
    )
    domains.add_argument("--methods", nargs="+", default=list(DOMAIN_VARIANTS), choices=list(VARIANTS))
    add_recipe_flags(domains)
    domains.add_argument("--out", required=True, help="results folder")
    domains.add_argument("--runs", required=True, help="folder for the runs (must not hold them yet)")
    domains.add_argument("--quiet", action="store_true", help="no progress bars")
    domains.set_defaults(func=_bench_domains, reads=("root", "checkpoint", "config"), writes=("out", "runs"))
