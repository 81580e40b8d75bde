"""Run folders: what a run records, the resume contract, and starts that leave nothing behind.

A run folder holds ``config.yaml`` (the resolved recipe) and ``data.yaml`` (the data it trains
on), written once, when the run starts, and only after every check has passed. ``--resume``
continues the run with the recipe it recorded: a setting given again must equal the recorded
one unless it cannot change results (`RUNTIME_SETTINGS`), and nothing in the folder changes
before the new command line is accepted. A start that fails before the run wrote any output
removes what it made, so the corrected command finds no folder in its way.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from repadapter.errors import RepAdapterError, first_line
from repadapter.files import atomic_write
from repadapter.training.config import TrainConfig, config_of, read_settings

RECIPE_FILE = "config.yaml"
DATA_FILE = "data.yaml"
RECORD_FILES = (RECIPE_FILE, DATA_FILE)

# Settings that choose where and how a run computes, not what it computes: the device (and
# torch.compile) change floating-point rounding only, the evaluation batch only how evaluation
# is batched, the data-loading workers only who decodes the images (see `workers_matter`), and
# the image cache and activation checkpointing give the same tensors and gradients (tested), and
# sharding (fsdp) changes how gradients are summed, not what they are (tested; its files are a
# single process's, so a run resumes with or without it).
RUNTIME_SETTINGS = (
    "device",
    "compile",
    "eval_batch_size",
    "workers",
    "data_cache",
    "grad_checkpointing",
    "fsdp",
)


def workers_matter(cfg: TrainConfig) -> bool:
    """Whether the number of data-loading workers changes results: it does where training draws
    random numbers while loading (few-shot augmentation, video frame sampling), because each
    worker draws from its own random stream."""
    return cfg.augment == "fewshot" or cfg.task == "video"


def changes_results(name: str, record: TrainConfig) -> bool:
    """Whether a different value of setting ``name`` would change what a run of ``record``
    computes (every setting but the runtime ones)."""
    return name not in RUNTIME_SETTINGS or (name == "workers" and workers_matter(record))


def recipe_differences(record: TrainConfig, cfg: TrainConfig) -> list[str]:
    """Each setting of ``cfg`` that differs from ``record`` and changes results, as
    ``--lr 0.01 differs from the run's 0.001``."""
    return [
        f"{_given(name, getattr(cfg, name))} differs from the run's {_recorded(name, getattr(record, name))}"
        for name in record.to_dict()
        if changes_results(name, record) and not _same(name, getattr(record, name), getattr(cfg, name))
    ]


def refuse_other_recipe(recorded: dict[str, Any], cfg: TrainConfig, what: Path) -> None:
    """Refuse to reuse ``what`` (a finished run's summary, a checkpoint), whose ``recorded`` recipe
    differs from ``cfg`` in a setting that changes results."""
    differences = recipe_differences(config_of(recorded), cfg)
    if differences:
        raise RepAdapterError(
            f"{what} was made with another recipe: {'; '.join(differences)}. "
            "Give another output folder, or remove it to run again with this recipe"
        )


def finished_summary(run_dir: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The summary of the finished run in ``run_dir`` if there is one, made with ``cfg``'s
    recipe (else refused: reusing it would report another recipe's numbers)."""
    done = run_dir / "summary.json"
    if not done.is_file():
        return None
    summary: dict[str, Any] = json.loads(done.read_text())
    refuse_other_recipe(summary.get("config", {}), cfg, done)
    return summary


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _given(name: str, value: Any) -> str:
    """A setting as the command line gives it: ``--lr 0.01``, ``--no-pretrained``."""
    if isinstance(value, bool):
        return _flag(name) if value else "--no-" + name.replace("_", "-")
    return f"{_flag(name)} {value}"


def _recorded(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return _given(name, value)
    return "unset" if value is None else str(value)


def _same(name: str, old: Any, new: Any) -> bool:
    if name == "scale":  # "1" and 1.0 are the same scale
        try:
            return float(old) == float(new)
        except (TypeError, ValueError):
            return str(old) == str(new)
    return bool(old == new)


def _holds_output(out: Path) -> bool:
    """Whether ``out`` holds anything but a run's record and empty folders."""
    return any(
        not path.is_dir() and path.relative_to(out).as_posix() not in RECORD_FILES for path in out.rglob("*")
    )


def refuse_overwrite(out: Path) -> None:
    """A new run may start in a missing or empty folder, or one that holds only the record of a
    start that never trained."""
    if out.is_dir() and _holds_output(out):
        if (out / RECIPE_FILE).is_file():
            raise RepAdapterError(
                f"output folder {out} already holds a run; pass --resume to continue it or pick another --out"
            )
        raise RepAdapterError(
            f"output folder {out} already holds files but no run (it has no {RECIPE_FILE}); "
            "pick another --out"
        )


def _read_data_record(out: Path) -> dict[str, Any]:
    path = out / DATA_FILE
    if not path.is_file():
        return {}  # a run started before runs recorded their data
    try:
        record = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise RepAdapterError(f"{path} is damaged ({first_line(err)}); it cannot be resumed") from err
    if not isinstance(record, dict):
        raise RepAdapterError(f"{path} is damaged (not a mapping); it cannot be resumed")
    return record


def resumed_config(out: Path, given: dict[str, Any], data: dict[str, Any]) -> TrainConfig:
    """The recipe a resumed run continues with: the one ``out`` recorded, with the runtime
    settings of ``given`` (the settings the new command gives). A given setting or ``data``
    entry that differs from the record and can change results is refused, each named with its
    old and new value."""
    if not out.is_dir() or not any(out.iterdir()):
        state = "does not exist" if not out.exists() else "is empty"
        raise RepAdapterError(
            f"--resume: {out} {state}, so there is no run to continue; drop --resume to start one"
        )
    if not (out / RECIPE_FILE).is_file():
        raise RepAdapterError(
            f"--resume: {out} is not a run folder (it has no {RECIPE_FILE}); give the run's folder as --out"
        )
    record = config_of(read_settings(out / RECIPE_FILE, what="the run's record"))
    old_data = _read_data_record(out)
    differences = [
        f"{_given(name, value)} differs from the run's {old_data[name]}"
        for name, value in data.items()
        if name in old_data and old_data[name] != value
    ]
    for name, value in given.items():
        old = getattr(record, name)
        if changes_results(name, record) and not _same(name, old, value):
            differences.append(f"{_given(name, value)} differs from the run's {_recorded(name, old)}")
    if differences:
        raise RepAdapterError(
            f"{out} holds a run with another recipe: {'; '.join(differences)}.\n"
            "A resumed run keeps the recipe it started with: drop those flags to resume it, "
            "or give another --out to start a new run."
        )
    return config_of({**record.to_dict(), **{k: v for k, v in given.items() if k in RUNTIME_SETTINGS}})


def _top_missing(out: Path) -> Path | None:
    """The outermost folder of ``out``'s path that does not exist yet (None if ``out`` exists)."""
    missing = None
    path = out.absolute()
    while not path.exists():
        missing, path = path, path.parent
    return missing


@contextmanager
def run_folder(
    out: Path, cfg: TrainConfig, data: dict[str, Any], resume: bool, is_main: bool
) -> Iterator[None]:
    """Around a run's work: a new run's main process makes ``out`` (and missing parents) and
    writes the record; if the work then fails before writing any output, what was made goes."""
    made = _top_missing(out)
    if is_main and not resume:
        try:
            out.mkdir(parents=True, exist_ok=True)
            recipe = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            atomic_write(out / RECIPE_FILE, lambda tmp: tmp.write_text(recipe))
            inputs = yaml.safe_dump(data, sort_keys=False)
            atomic_write(out / DATA_FILE, lambda tmp: tmp.write_text(inputs))
        except OSError as err:
            _clear(out, made)
            raise RepAdapterError(
                f"cannot write the run folder {out}: {err.strerror or err}; give a --out where you can write"
            ) from err
    try:
        yield
    except BaseException:
        if is_main and not resume and out.is_dir() and not _holds_output(out):
            _clear(out, made)
        raise


def _clear(out: Path, made: Path | None) -> None:
    """Remove a failed start's folders (``made``: the outermost one it created), or only its
    record and empty folders where ``out`` was there before."""
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        return
    for name in RECORD_FILES:
        (out / name).unlink(missing_ok=True)
    for path in sorted(out.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
