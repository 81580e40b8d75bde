"""How a result was made: command, commit, machine, date and versions, saved beside it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from repadapter.files import atomic_write


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """A JSON-ready record of the command line, code version, machine and libraries."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "versions": {
            "python": platform.python_version(),
            **{pkg: _version(pkg) for pkg in ("repadapter", "torch", "timm", "safetensors")},
        },
    }


def write_result(
    path: str | os.PathLike[str], result: dict[str, Any], made_by: dict[str, Any] | None = None
) -> Path:
    """Write ``result`` with its provenance as indented JSON, atomically.

    Pass ``made_by=provenance()`` taken when the work started: the code that ran is the code
    at the start, even if the working tree changes while a long command runs.
    """
    payload = {"provenance": made_by or provenance(), **result}
    text = json.dumps(payload, indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))
