"""What the command groups share: argparse types, the base-model and data flags, flags from a
settings dataclass, output checks, and the refusal of outputs that are inputs.

Each subcommand names its path flags with ``set_defaults(reads=..., writes=...)``;
`refuse_in_place` checks them before the command runs. The lab's commands
(`repadapter_lab.commands`) use these helpers too.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from repadapter.config import ALL_PLACEMENTS
from repadapter.errors import RepAdapterError


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a count, size or batch)."""
    value = non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def non_negative(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return value


def add_base_flags(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--pretrained``, ``--checkpoint`` and ``--img-size``: the base model an
    adapter file or merged checkpoint goes on."""
    parser.add_argument(
        "--model",
        required=True,
        help="the base model: a timm name (also local-dir:<folder>, hf-hub:<repo>), hf:<folder or hub id> "
        "(Hugging Face ViT, DINOv2, CLIP vision, VideoMAE) or open_clip:<arch or config.json>[@tag]",
    )
    parser.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="load the base model's pretrained weights from the hub (default: yes)",
    )
    parser.add_argument("--checkpoint", help="local weights file for the base model instead of the hub")
    parser.add_argument(
        "--img-size", type=positive, help="input size the model was adapted at (default: its own)"
    )


def add_data_flags(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """``--data`` (given once, or with ``several`` once per data set) and the shots flags."""
    parser.add_argument(
        "--data",
        required=True,
        action="append" if several else "store",
        help="vtab:<root>/<task> | fewshot:<root>/<dataset> | folder:<root> | csv:<root> | imagenet:<root> "
        "(ILSVRC-2012 train/ and val/ of wnid folders) | imagenet-v2:<root> | imagenet-sketch:<root> | "
        "imagenet-a:<root> | imagenet-r:<root> (test only) (classification); "
        "ade20k:<root> | masks:<root> (segmentation); videos:<root> (video)"
        + ("; give --data once per data set to score several" if several else ""),
    )
    parser.add_argument(
        "--shots",
        type=int,
        help="few-shot data: shots per class (1, 2, 4, 8, 16; default 1); imagenet: training images "
        "drawn per class (default: all)",
    )
    parser.add_argument(
        "--fewshot-seed", type=int, default=0, help="few-shot data: split seed (0, 1, 2); imagenet: draw seed"
    )


def add_settings_flags(parser: argparse.ArgumentParser, defaults: object, helps: dict[str, str]) -> None:
    """One ``--flag`` per field of the settings dataclass ``defaults``, typed by its default."""
    for field in dataclasses.fields(defaults):  # type: ignore[arg-type]
        value = getattr(defaults, field.name)
        kwargs = {"default": value, "type": type(value)}
        if field.name == "placement":
            kwargs["choices"] = ALL_PLACEMENTS
        if field.name == "method":
            from repadapter.training.methods import METHODS

            kwargs["choices"] = list(METHODS)
        text = helps.get(field.name, field.name.replace("_", " "))
        parser.add_argument(
            "--" + field.name.replace("_", "-"), help=f"{text} (default: %(default)s)", **kwargs
        )


def check_outputs(
    files: Sequence[str | None] = (), folders: Sequence[str | None] = (), flag: str = "--out"
) -> None:
    """Refuse, before any work, output files that cannot be written and output folders that
    cannot be made (folders are made with their missing parents when written)."""
    from repadapter.files import check_out_file, check_out_folder

    for file in files:
        if file is not None:
            check_out_file(file)
    for folder in folders:
        if folder is not None:
            check_out_folder(folder, flag)


def refuse_in_place(args: argparse.Namespace) -> None:
    """Refuse, before anything is read or written, an output of the command that is one of its
    inputs (the same file after resolving links and relative parts), that lies in an input
    folder or holds an input, or that is another output of the same command. Each subcommand
    names its path flags with ``set_defaults(reads=..., writes=...)``."""
    reads = _flag_paths(args, getattr(args, "reads", ()))
    writes = _flag_paths(args, getattr(args, "writes", ()))
    for out_flag, out in writes:
        for in_flag, given in reads:
            if _same_place(out, given):
                raise RepAdapterError(
                    f"{out_flag} {out} is the {in_flag} input itself; writing it would destroy the input. "
                    f"Give {out_flag} another path"
                )
    for i, (out_flag, out) in enumerate(writes):
        for in_flag, given in reads:
            if _inside(out, given) or _inside(given, out):
                outer, inner = (given, out) if _inside(out, given) else (out, given)
                raise RepAdapterError(
                    f"{out_flag} {out} and the {in_flag} input {given} overlap ({inner} lies in {outer}); "
                    f"give {out_flag} a path outside the command's inputs"
                )
        for other_flag, other in writes[i + 1 :]:
            if _same_place(out, other):
                raise RepAdapterError(
                    f"{out_flag} and {other_flag} are the same file {out}; give each output its own path"
                )


def _flag_paths(args: argparse.Namespace, names: Sequence[str]) -> list[tuple[str, Path]]:
    """``(--flag, path)`` for each path the flags ``names`` of ``args`` give: a data spec's path
    after its ``kind:``, a ``LABEL=FILE``'s file, every item of a list."""
    found = []
    for name in names:
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if not item:
                continue
            text = str(item)
            if name == "data":
                text = text.partition(":")[2]
            elif name == "checkpoint" and isinstance(value, list):
                text = text.partition("=")[2]
            if text:
                found.append(("--" + name.replace("_", "-"), Path(text)))
    return found


def _same_place(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _inside(inner: Path, outer: Path) -> bool:
    """``inner`` lies in the folder ``outer`` (after resolving links and relative parts); a path
    under a file lies in no folder (writing there fails, and says so, on its own)."""
    if outer.exists() and not outer.is_dir():
        return False
    return inner.resolve().is_relative_to(outer.resolve()) and not _same_place(inner, outer)
