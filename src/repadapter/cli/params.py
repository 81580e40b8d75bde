"""``repadapter params``: adapter parameter counts and file sizes of a model per placement."""

from __future__ import annotations

import argparse

from repadapter.config import RepAdapterConfig


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


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``params``."""
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
