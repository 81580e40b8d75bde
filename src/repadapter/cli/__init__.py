"""The ``repadapter`` command line.

One module per group of commands (`train`, `evaluate`, `deploy`, `data`, `params`), each parsing
its flags and calling library functions; shared flags and checks in `flags`. Other packages add
commands through the entry-point group ``repadapter.commands`` (the lab's ``demo``, ``bench``,
``data build``, ...): an entry point's name is the command's words joined by dots, its object a
function that adds the command's parser to the subcommands of the group it belongs to. The
command line shows each one as a stub and imports its package only when that command runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points

from repadapter._version import __version__
from repadapter.cli import data, deploy, evaluate, params, train
from repadapter.cli.flags import refuse_in_place
from repadapter.errors import RepAdapterError

PLUGIN_GROUP = "repadapter.commands"


def build_parser() -> argparse.ArgumentParser:
    """The library's commands, and a stub for each plug-in command (it takes any arguments;
    `main` hands them to the command's own parser)."""
    parser = _root_parser()
    commands = _subcommands(parser)
    for group in (train, evaluate, deploy, data, params):
        group.add_commands(commands)
    for entry in entry_points(group=PLUGIN_GROUP):
        *path, name = entry.name.split(".")
        stub = _group(commands, path).add_parser(
            name,
            add_help=False,
            help=f"from {entry.module.partition('.')[0]}: see repadapter {' '.join([*path, name])} --help",
        )
        stub.set_defaults(plugin=entry)
    return parser


def _root_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repadapter", description="RepAdapter: adapt a pretrained vision model, deploy it at zero cost."
    )
    parser.add_argument("--version", action="version", version=f"repadapter {__version__}")
    parser.add_subparsers(dest="command", required=True)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action


def _group(commands: argparse._SubParsersAction, path: Sequence[str]) -> argparse._SubParsersAction:
    """The subcommands of the group that the command words ``path`` name, made where missing."""
    for word in path:
        if word in commands.choices:
            commands = _subcommands(commands.choices[word])
        else:
            commands = commands.add_parser(word).add_subparsers(dest=f"{word}_command", required=True)
    return commands


def _plugin_parser(entry: EntryPoint) -> argparse.ArgumentParser:
    """A ``repadapter`` parser that holds the plug-in command ``entry`` with its own flags."""
    parser = _root_parser()
    *path, _ = entry.name.split(".")
    entry.load()(_group(_subcommands(parser), path))
    return parser


def _note(message: Warning | str, *_: object, **__: object) -> None:
    """A warning as one line, without the source line Python shows under it."""
    print(f"repadapter: note: {' '.join(str(message).split())}", file=sys.stderr)


def _stop(signum: int, frame: object) -> None:
    """SIGTERM (a plain ``kill``) unwinds like Ctrl-C, so a write in progress removes its
    temporary file on the way out."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    plugin = getattr(args, "plugin", None)
    if plugin is not None:
        args = _plugin_parser(plugin).parse_args(argv)
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if in_main_thread else None
    with warnings.catch_warnings():
        warnings.showwarning = _note
        try:
            refuse_in_place(args)
            args.func(args)
        except (RepAdapterError, ValueError) as err:
            print(f"repadapter: error: {err}", file=sys.stderr)
            return 2
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return 0
