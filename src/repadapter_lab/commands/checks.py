"""``repadapter verify``, ``repadapter switch-time`` and ``repadapter support-table``: exactness of
merging, the cost of switching tasks, and the support matrix (`repadapter_lab.benchmarks`)."""

from __future__ import annotations

import argparse

from repadapter.cli.flags import check_outputs, positive
from repadapter.config import PLACEMENTS, RepAdapterConfig
from repadapter.errors import RepAdapterError
from repadapter_lab.benchmarks import support
from repadapter_lab.benchmarks.exactness import DEFAULT_MODELS


def _verify(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance, write_result
    from repadapter_lab.benchmarks.exactness import check_exactness

    check_outputs(files=[args.json])
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


def _switch_time(args: argparse.Namespace) -> None:
    from repadapter.provenance import provenance, write_result
    from repadapter_lab.benchmarks.switch import measure_switch

    check_outputs(files=[args.json])
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


def _support_table(args: argparse.Namespace) -> None:
    rows = support.run(args.json, args.markdown)
    failed = [f"{r['model']} {r['placement']} g={r['groups']}" for r in rows if not r["passed"]]
    if failed:
        raise RepAdapterError(f"support checks failed: {failed}")


def add_verify(commands: argparse._SubParsersAction) -> None:
    """``verify`` (the ``repadapter.commands`` entry point ``verify``)."""
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


def add_switch_time(commands: argparse._SubParsersAction) -> None:
    """``switch-time`` (the ``repadapter.commands`` entry point ``switch-time``)."""
    switch = commands.add_parser(
        "switch-time",
        help="time how long a merged model takes to switch from one task's adapter to another's",
    )
    switch.add_argument("--model", default="vit_base_patch16_224", help="timm model (default: %(default)s)")
    switch.add_argument("--rounds", type=positive, default=6, help="switches to time (default: %(default)s)")
    switch.add_argument("--json", help="also write the result, with provenance, to this JSON file")
    switch.set_defaults(func=_switch_time)


def add_support_table(commands: argparse._SubParsersAction) -> None:
    """``support-table`` (the ``repadapter.commands`` entry point ``support-table``)."""
    parser = commands.add_parser(
        "support-table",
        help="check every supported model family end to end and write the support table",
        description=support.__doc__.splitlines()[0],
    )
    parser.add_argument("--json", default="results/support_table.json", help="(default: %(default)s)")
    parser.add_argument("--markdown", default="results/support_table.md", help="(default: %(default)s)")
    parser.set_defaults(func=_support_table, writes=("json", "markdown"))
