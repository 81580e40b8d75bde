"""The adapter file: safetensors tensors plus a JSON description in the safetensors header.

One self-contained file per adapter. The JSON (header key ``"repadapter"``) holds the method,
the format version, the library version, the `RepAdapterConfig`, the model family, the base
model's name, the number of classes and every adapter site, so that a file can be checked
against a model before any tensor is touched. Writes go to a temporary file and are renamed
into place, so a crash never leaves a half-written adapter.

Every tensor file the library writes goes through `save_tensor_file` (the same tensors and
metadata give the same bytes) and every one it reads through `read_tensor_file`: safetensors
only, which holds no code, and no NaN or infinite values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from repadapter.config import RepAdapterConfig
from repadapter.errors import RepAdapterError, first_line

METADATA_KEY = "repadapter"
FORMAT_VERSION = 1


def _file_mode(path: Path) -> int:
    """The replaced file's permissions, or what the umask gives a new file (mkstemp uses 0600)."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _cannot_write_in(folder: Path) -> str | None:
    """Why nothing can be made in ``folder`` (tried: permissions, read-only mounts and root all
    answer), or None."""
    try:
        probe = tempfile.mkdtemp(prefix=".repadapter-probe-", dir=folder)
    except OSError as err:
        return err.strerror or str(err)
    os.rmdir(probe)
    return None


def check_out_file(path: str | os.PathLike[str], probe: bool = True) -> Path:
    """``path`` as a Path if a file can be written there (its folder exists and is writable, and
    it is not a folder); else an error naming the problem. Commands call it before their work;
    ``probe=False`` leaves out the test write (for a writer that is about to write anyway)."""
    path = Path(path)
    if path.is_dir():
        raise RepAdapterError(f"{path} is a directory; give a file path to write to")
    if not path.parent.exists():
        where = _nearest_existing(path.parent)
        if not where.is_dir():
            raise RepAdapterError(f"cannot write {path}: {where} is a file, not a folder")
        raise RepAdapterError(f"cannot write {path}: folder {path.parent} does not exist")
    if not path.parent.is_dir():
        raise RepAdapterError(f"cannot write {path}: {path.parent} is a file, not a folder")
    problem = _cannot_write_in(path.parent) if probe else None
    if problem:
        raise RepAdapterError(f"cannot write {path}: cannot write in {path.parent} ({problem})")
    return path


def check_out_folder(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """``path`` as a Path if it is a folder, or one can be made there with its missing parents;
    else an error naming the problem. Commands call it before their work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RepAdapterError(f"{flag} {path} is a file, not a folder; give a folder")
    where = _nearest_existing(path)
    if not where.is_dir():
        raise RepAdapterError(f"{flag} {path}: {where} is a file, so no folder can be made under it")
    problem = _cannot_write_in(where)
    if problem:
        raise RepAdapterError(
            f"{flag} {path}: cannot write in {where} ({problem}); give a folder where you can write"
        )
    return path


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is hidden and named ``.<name>.<random>.partial``, so it never passes
    for a finished file; it is removed whenever ``write`` fails, including on Ctrl-C. Only a
    process killed outright (SIGKILL, power loss) can leave one behind, and ``path`` itself is
    then the old file or absent, never half-written.
    """
    path = check_out_file(path, probe=False)  # creating the temporary file is the test write
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as err:
        raise RepAdapterError(f"cannot write {path}: {err.strerror or err} in {path.parent}") from err
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


@contextlib.contextmanager
def partial_folder(target: Path) -> Iterator[Path]:
    """A hidden ``.<name>.partial`` folder beside ``target`` to build a folder in, which the
    caller renames into place when it is complete; removed if the build fails or is
    interrupted (and, if a killed build left one, before the next build starts)."""
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes, with its header's keys in a fixed order.

    safetensors writes the metadata entries in an order that varies from run to run; here they
    are sorted, so identical tensors and metadata always give identical bytes.
    """
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    raw = save(cpu, metadata=metadata)
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | header
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to a multiple of 8 bytes
    return len(text).to_bytes(8, "little") + text + raw[8 + size :]


def save_tensor_file(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` (and string ``metadata``) as safetensors, atomically and reproducibly."""
    data = safetensors_bytes(tensors, metadata)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of ``tensors``: each one's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _is_pickle(path: Path) -> bool:
    """Whether ``path`` starts like a ``torch.save`` archive (zip) or a bare pickle."""
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError:
        return False
    return start.startswith(b"PK\x03\x04") or start[:1] == b"\x80"


def refuse_pickle(path: str | os.PathLike[str], fix: str) -> RepAdapterError:
    """The error for a pickle that ``torch.load(weights_only=True)`` refused to unpickle."""
    return RepAdapterError(
        f"{path} holds Python objects other than tensors and plain values, so it was not loaded "
        f"(unpickling them could run code). {fix}"
    )


def torch_load_safely(path: str | os.PathLike[str], fix: str) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain values only. A pickle that needs
    anything else is refused with `refuse_pickle` (and ``fix``), never unpickled."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes about the pickle protocol it found
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise refuse_pickle(path, fix) from err
    except Exception as err:  # zip, EOF and format errors come in many types
        raise RepAdapterError(
            f"cannot read {path} ({first_line(err)}): it is damaged or not a PyTorch file. {fix}"
        ) from err


def _check_finite(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise RepAdapterError(
                f"{path}: tensor {name} holds {bad} NaN or infinite value(s); the file is damaged or "
                "comes from a run that diverged. Use a checkpoint saved before the divergence."
            )


def unreadable_safetensors(
    path: str | os.PathLike[str], what: str, err: Exception, hint: str
) -> RepAdapterError:
    """The error for a file that should be safetensors but is not: a pickle is named as one."""
    if _is_pickle(Path(path)):
        return RepAdapterError(
            f"{path} is a pickle (torch.save) file, not a safetensors {what}; repadapter does not "
            f"unpickle it, since that could run code. {hint}"
        )
    return RepAdapterError(
        f"{path} is not a readable {what}: it is truncated, corrupted or not in safetensors format "
        f"({first_line(err)}). {hint}"
    )


def _read_safetensors(path: Path, what: str, hint: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The header metadata and the tensors of a safetensors file, all finite."""
    if not path.is_file():
        raise RepAdapterError(f"{what} {path} does not exist (or is not a file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise unreadable_safetensors(path, what, err, hint) from err
    _check_finite(path, tensors)
    return header, tensors


def read_tensor_file_with_metadata(
    path: str | os.PathLike[str], what: str = "tensor file"
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The header metadata and the tensors of a safetensors file (a merged model, trained
    weights), checked finite; any problem is a `RepAdapterError` naming the file. Nothing in a
    safetensors file runs code."""
    return _read_safetensors(Path(path), what, "Give a .safetensors file written by repadapter or timm.")


def read_tensor_file(path: str | os.PathLike[str], what: str = "tensor file") -> dict[str, torch.Tensor]:
    """The tensors of `read_tensor_file_with_metadata`."""
    return read_tensor_file_with_metadata(path, what)[1]


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
    return save_tensor_file(path, tensors, header)


def read_adapter_file(path: str | os.PathLike[str]) -> AdapterFile:
    """Read and check an adapter file; any problem is a `RepAdapterError` naming the file."""
    path = Path(path)
    header, tensors = _read_safetensors(path, "adapter file", "Save adapters with repadapter.save_adapter.")
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
