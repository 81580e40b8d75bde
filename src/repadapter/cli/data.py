"""``repadapter data``: checking a data set (``data check``). ``data build`` is the lab's
(`repadapter_lab.commands`), added to this group as a plug-in command."""

from __future__ import annotations

import argparse

from repadapter.errors import RepAdapterError


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


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The ``data`` group with ``data check``."""
    data = commands.add_parser("data", help="build and check data sets").add_subparsers(
        dest="data_command", required=True
    )
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
