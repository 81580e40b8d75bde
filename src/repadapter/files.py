"""The adapter file: safetensors tensors plus a JSON description in the safetensors header.

One self-contained file per adapter. The JSON (header key ``"repadapter"``) holds the method,
the format version, the library version, the `RepAdapterConfig`, the model family, the base
model's name, the number of classes and every adapter site, so that a file can be checked
against a model before any tensor is touched. Writes go to a temporary file and are renamed
into place, so a crash never leaves a half-written adapter.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from repadapter.config import RepAdapterConfig
from repadapter.errors import RepAdapterError

METADATA_KEY = "repadapter"
FORMAT_VERSION = 1


def _file_mode(path: Path) -> int:
    """The replaced file's permissions, or what the umask gives a new file (mkstemp uses 0600)."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    if path.is_dir():
        raise RepAdapterError(f"{path} is a directory; give a file path to write to")
    if not path.parent.exists():
        raise RepAdapterError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class AdapterFile:
    """The contents of an adapter file."""

    config: RepAdapterConfig
    metadata: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path | str  # where it was read from, or a label for one held in memory


def write_adapter_file(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> Path:
    """Write ``tensors`` and ``metadata`` (JSON-ready, with a ``config`` entry) atomically."""
    header = {
        "format": "pt",
        METADATA_KEY: json.dumps({"method": "repadapter", "format_version": FORMAT_VERSION, **metadata}),
    }
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata=header))


def read_adapter_file(path: str | os.PathLike[str]) -> AdapterFile:
    """Read and check an adapter file; any problem is a `RepAdapterError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RepAdapterError(f"adapter file {path} does not exist (or is not a file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise RepAdapterError(
            f"{path} is not a readable adapter file: it is truncated, corrupted or not in "
            f"safetensors format ({err}). Save adapters with repadapter.save_adapter."
        ) from err
    if METADATA_KEY not in header:
        raise RepAdapterError(
            f"{path} is a safetensors file but not a repadapter adapter file (its header has no "
            f"{METADATA_KEY!r} entry); save adapters with repadapter.save_adapter. A PEFT "
            "adapter_model.safetensors loads through PEFT: `import repadapter.peft_plugin`, then "
            "peft.PeftModel.from_pretrained(base_model, its folder)"
        )
    try:
        metadata = json.loads(header[METADATA_KEY])
        if metadata.get("method") != "repadapter":
            raise RepAdapterError(f"{path} holds method {metadata.get('method')!r}, not 'repadapter'")
        version = metadata.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise RepAdapterError(
                f"{path} has adapter format version {version!r}; this repadapter reads up to "
                f"{FORMAT_VERSION}: upgrade repadapter to read it"
            )
        config = RepAdapterConfig.from_dict(metadata["config"])
        sites = metadata["sites"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RepAdapterError(f"{path} has a damaged repadapter description: {err!r}") from err
    missing = [
        f"{host}.repadapter.{part}"
        for host in sites
        for part in ("down.weight", "up.weight")
        if f"{host}.repadapter.{part}" not in tensors
    ]
    if missing:
        raise RepAdapterError(f"{path} lacks adapter tensors it describes: {missing[:4]}")
    return AdapterFile(config=config, metadata=metadata, tensors=tensors, path=path)
