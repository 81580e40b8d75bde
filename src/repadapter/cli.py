"""The ``repadapter`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from repadapter import __version__
from repadapter.config import PLACEMENTS, RepAdapterConfig
from repadapter.errors import RepAdapterError


def _demo(args: argparse.Namespace) -> None:
    from repadapter.benchmarks.provenance import write_result
    from repadapter.demo import DemoSettings, run_demo

    names = {f.name for f in dataclasses.fields(DemoSettings)}
    settings = DemoSettings(**{k: v for k, v in vars(args).items() if k in names})
    result = run_demo(settings)
    if args.json:
        print(f"wrote {write_result(args.json, {'demo': result})}")


def _params(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from repadapter.backbones import create
    from repadapter.model import count_parameters, inject, save_adapter

    print(f"{args.model}, dim={args.dim}, groups={args.groups}:")
    for placement in PLACEMENTS:
        model = create(args.model, num_classes=0)
        inject(model, RepAdapterConfig(dim=args.dim, groups=args.groups, placement=placement))
        counts = count_parameters(model)
        with tempfile.TemporaryDirectory() as tmp:
            size = save_adapter(model, Path(tmp) / "adapter.safetensors").stat().st_size
        print(
            f"  placement={placement:5s}  adapters {counts.adapter:,} ({counts.adapter / 1e6:.2f}M) "
            f"with biases, {counts.adapter_weights:,} ({counts.adapter_weights / 1e6:.2f}M) weights "
            f"only; adapter file without head {size:,} bytes; backbone {counts.backbone:,}"
        )


def _verify(args: argparse.Namespace) -> None:
    from repadapter.benchmarks.exactness import check_exactness
    from repadapter.benchmarks.provenance import write_result

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
    if args.json:
        print(f"wrote {write_result(args.json, {'exactness': rows})}")


def build_parser() -> argparse.ArgumentParser:
    from repadapter.benchmarks.exactness import DEFAULT_MODELS
    from repadapter.demo import DemoSettings

    parser = argparse.ArgumentParser(
        prog="repadapter", description="RepAdapter: adapt a pretrained vision model, deploy it at zero cost."
    )
    parser.add_argument("--version", action="version", version=f"repadapter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="the self-contained main job: inject, train, save, merge and time a small ViT",
        description="Inject RepAdapters into a small randomly initialised timm ViT, train them on "
        "generated gratings, save and reload the adapter, merge, and report merged-vs-unmerged "
        "difference, parameter counts and base/merged/unmerged latency.",
    )
    defaults = DemoSettings()
    for field in dataclasses.fields(DemoSettings):
        flag = "--" + field.name.replace("_", "-")
        kwargs = {"default": getattr(defaults, field.name), "type": type(getattr(defaults, field.name))}
        if field.name == "placement":
            kwargs["choices"] = PLACEMENTS
        parser_help = {
            "model": "timm architecture name (built without pretrained weights)",
            "steps": "optimizer steps",
            "latency_rounds": "interleaved timing rounds at batch 1",
            "scale": "adapter scale s",
        }.get(field.name, field.name.replace("_", " "))
        demo.add_argument(flag, help=f"{parser_help} (default: %(default)s)", **kwargs)
    demo.add_argument("--json", help="also write the measurements, with provenance, to this JSON file")
    demo.set_defaults(func=_demo)

    params = commands.add_parser(
        "params", help="print adapter parameter counts and file sizes of a timm ViT for both placements"
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (RepAdapterError, ValueError) as err:
        print(f"repadapter: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
