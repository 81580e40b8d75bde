"""The lab's commands plug into `repadapter` through the entry-point group ``repadapter.commands``:
the library loads no lab module for ``import repadapter`` or ``repadapter --help``, and each lab
command runs with its own flags, output and exit codes.

The tests that read the installed entry points need the package's metadata to be current: after
a change to pyproject.toml's entry points, reinstall (``pip install -e .``; tools/setup.sh does).
"""

import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points

import pytest

import repadapter.cli
from repadapter.cli import PLUGIN_GROUP, main

LAB_COMMANDS = {"bench", "data.build", "demo", "pretrain", "support-table", "switch-time", "verify"}
REINSTALL = "the installed metadata lacks the lab's entry points: reinstall with pip install -e ."


def lab_modules_after(statement: str) -> list[str]:
    """The repadapter_lab modules in ``sys.modules`` after ``statement`` runs in a fresh interpreter."""
    probe = (
        f"import sys\n{statement}\n"
        "print(' '.join(m for m in sys.modules if m.split('.')[0] == 'repadapter_lab'))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repadapter.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_the_lab_commands_are_declared_entry_points():
    found = {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}
    assert set(found) == LAB_COMMANDS, REINSTALL
    assert all(entry.module.startswith("repadapter_lab.commands.") for entry in found.values())
    assert all(callable(entry.load()) for entry in found.values())


def test_import_and_help_load_no_lab_module():
    assert lab_modules_after("import repadapter") == []
    assert lab_modules_after("from repadapter.cli import build_parser; build_parser()") == []
    help_run = (
        "import contextlib, io\nfrom repadapter.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as text:\n"
        "    try:\n        main(['--help'])\n    except SystemExit as stop:\n        assert stop.code == 0\n"
        "assert 'usage: repadapter' in text.getvalue()"
    )
    assert lab_modules_after(help_run) == []
    listed = cli("--help")
    assert listed.returncode == 0 and "verify" in listed.stdout and "switch-time" in listed.stdout, REINSTALL


def test_lab_commands_parse_as_before():
    latency = cli("bench", "latency", "--help")
    assert latency.returncode == 0, latency.stderr
    assert latency.stdout.startswith("usage: repadapter bench latency [-h]")
    assert "--threads THREADS" in latency.stdout and "CPU threads (default: torch's)" in latency.stdout
    build = cli("data", "build", "--help")
    assert build.returncode == 0 and build.stdout.startswith("usage: repadapter data build [-h]")
    wrong = cli("bench", "latency", "--batches", "0", "--out", "x")
    assert (
        wrong.returncode == 2 and "--batches: expected a whole number of at least 1, got '0'" in wrong.stderr
    )
    assert (
        cli("bench", "nope")
        .stderr.splitlines()[-1]
        .startswith("repadapter bench: error: argument bench_command: invalid choice: 'nope'")
    )
    unknown = cli("demo", "--nope")
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines()[-1] == "repadapter: error: unrecognized arguments: --nope"


def add_hello(commands) -> None:
    """A plug-in command of another package, in the library's ``data`` group."""
    hello = commands.add_parser("hello", help="say hello")
    hello.add_argument("--name", required=True)
    hello.add_argument("--out")
    hello.add_argument("--source")
    hello.set_defaults(func=lambda args: print(f"hello {args.name}"), reads=("source",), writes=("out",))


def test_a_plug_in_command_gets_its_own_flags_and_the_library_checks(monkeypatch, capsys, tmp_path):
    entry = EntryPoint("data.hello", f"{__name__}:add_hello", PLUGIN_GROUP)
    monkeypatch.setattr(
        repadapter.cli, "entry_points", lambda group: [entry] if group == PLUGIN_GROUP else []
    )
    assert main(["data", "hello", "--name", "lab"]) == 0
    assert capsys.readouterr().out == "hello lab\n"
    with pytest.raises(SystemExit) as stop:
        main(["data", "hello"])  # its own parser: a required flag
    assert stop.value.code == 2
    assert (
        "repadapter data hello: error: the following arguments are required: --name"
        in capsys.readouterr().err
    )
    same = str(tmp_path / "f")
    assert main(["data", "hello", "--name", "x", "--source", same, "--out", same]) == 2  # in place: refused
    assert "is the --source input itself" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["params", "--nope"])  # a library command still refuses what it does not know
    assert stop.value.code == 2
    assert "repadapter: error: unrecognized arguments: --nope" in capsys.readouterr().err
