"""Faults and bad input at the command line, driven as a user drives it: `repadapter` in a
subprocess. Each case checks the exit code, a short message without a traceback, and the disk
afterwards: nothing lost, nothing half-written, nothing left in the way of the next command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import TINY_CLI_FLAGS, make_vtab_task

TINY = ["--model", "vit_tiny_patch16_224", "--img-size", "32"]


def cli(*args: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "repadapter.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)


def refused(run: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """The one- or two-line message of a refused command, checked to name ``phrases``."""
    message = run.stderr.strip()
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr and 1 <= len(message.splitlines()) <= 2, run.stderr
    assert message.startswith("repadapter: error: "), message
    for phrase in phrases:
        assert phrase in message, message
    return message


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (temporary files included, so leftovers show)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory) -> Path:
    """A real adapter file (random non-zero adapters on a random 32-pixel ViT-Tiny, 4 classes)."""
    import timm

    import repadapter as ra

    folder = tmp_path_factory.mktemp("adapter")
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=4)
    ra.save_adapter(ra.perturb_adapters(ra.inject(model)), folder / "adapter.safetensors")
    return folder / "adapter.safetensors"


# --- an output that is an input ----------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["same", "relative", "symlink"])
def test_merge_onto_its_own_adapter_is_refused_and_the_adapter_kept(tmp_path, adapter_file, spelling):
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.safetensors").write_bytes(adapter_file.read_bytes())
    out = {"same": "a.safetensors", "relative": "../work/./a.safetensors", "symlink": "link.safetensors"}
    if spelling == "symlink":
        (work / "link.safetensors").symlink_to("a.safetensors")
    before = snapshot(work)
    run = cli(
        "merge", *TINY, "--no-pretrained", "--adapter", "a.safetensors", "--out", out[spelling], cwd=work
    )
    refused(run, "is the --adapter input itself", "Give --out another path")
    assert snapshot(work) == before  # the adapter intact, no temporary file beside it


def test_export_and_train_outputs_that_are_inputs_are_refused(tmp_path, adapter_file):
    make_vtab_task(tmp_path, "dtd", train=4, val=2, test=2)
    before = snapshot(tmp_path)
    kept = adapter_file.read_bytes()
    run = cli("export", *TINY, "--adapter", adapter_file, "--onnx", adapter_file)
    refused(run, "--onnx", "is the --adapter input itself")
    run = cli(
        "export", *TINY, "--adapter", adapter_file, "--onnx", tmp_path / "m", "--torchscript", tmp_path / "m"
    )
    refused(run, "--onnx and --torchscript are the same file")
    run = cli(
        "train", "--data", f"vtab:{tmp_path / 'dtd'}", *TINY_CLI_FLAGS, "--out", tmp_path / "dtd", "--resume"
    )
    refused(run, "--out", "is the --data input itself")
    run = cli(
        "train", "--data", f"vtab:{tmp_path / 'dtd'}", *TINY_CLI_FLAGS, "--out", tmp_path / "dtd" / "run"
    )
    refused(run, "overlap", "give --out a path outside the command's inputs")
    run = cli(
        "train",
        "--data",
        f"vtab:{tmp_path / 'dtd'}",
        *TINY_CLI_FLAGS,
        "--checkpoint",
        adapter_file,
        "--out",
        adapter_file,
    )
    refused(run, "is the --checkpoint input itself")
    assert snapshot(tmp_path) == before and adapter_file.read_bytes() == kept


# --- numbers that make no sense ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        (["--scale", "0"], "scale must be 'auto', 'paper' or a number above 0"),
        (["--scale", "inf"], "scale must be 'auto', 'paper' or a number above 0"),
        (["--dim", "8", "--groups", "3"], "dim=8 is not divisible by groups=3"),
    ],
)
def test_senseless_numbers_are_refused_before_a_run_folder_exists(tmp_path, flags, phrase):
    make_vtab_task(tmp_path, "dtd", train=4, val=2, test=2)
    run = cli(
        "train", "--data", f"vtab:{tmp_path / 'dtd'}", *TINY_CLI_FLAGS, *flags, "--out", tmp_path / "run"
    )
    refused(run, phrase)
    assert not (tmp_path / "run").exists()


def test_a_scale_of_zero_is_refused_by_the_exactness_check():
    refused(
        cli("verify", "--models", "vit_tiny_patch16_224:depth=1", "--scales", "0"),
        "scale must be a finite number above 0",
    )


# --- files that are not what they claim, weights that are not there ------------------------------


def _bad_file(path: Path, kind: str, good: Path) -> Path:
    if kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    else:  # a pickle that would run a command if unpickled
        import pickle

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {path.parent / 'PWNED'}",))

        path.write_bytes(pickle.dumps(Payload()))
    return path


@pytest.mark.parametrize("kind", ["truncated", "random", "pickle", "missing"])
def test_eval_weights_that_are_not_safetensors_are_named(tmp_path, adapter_file, kind):
    make_vtab_task(tmp_path, "dtd", train=4, val=2, test=2)
    weights = tmp_path / "merged.safetensors"
    if kind != "missing":
        _bad_file(weights, kind, adapter_file)
    run = cli("eval", *TINY, "--no-pretrained", "--data", f"vtab:{tmp_path / 'dtd'}", "--weights", weights)
    what = "merged checkpoint (--weights)"
    refused(run, {
        "missing": f"{what} {weights} does not exist",
        "pickle": f"{weights} is a pickle (torch.save) file, not a safetensors {what}",
    }.get(kind, f"{weights} is not a readable {what}: it is truncated, corrupted"))  # fmt: skip
    assert not (tmp_path / "PWNED").exists()


def test_a_pickle_named_safetensors_as_base_checkpoint_is_named(tmp_path, adapter_file):
    checkpoint = _bad_file(tmp_path / "base.safetensors", "pickle", adapter_file)
    out = tmp_path / "m.safetensors"
    run = cli("merge", *TINY, "--checkpoint", checkpoint, "--adapter", adapter_file, "--out", out)
    refused(run, f"{checkpoint} is a pickle (torch.save) file, not a safetensors weights file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.safetensors"]  # no output, no temp file


def test_pretrained_weights_without_a_network_fail_at_once_and_say_what_to_pass(tmp_path, adapter_file):
    """An empty cache and a hub that refuses connections (as with no network): a short message,
    not a download library's retries and traceback."""
    import time

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    command = [sys.executable, "-m", "repadapter.cli", "merge", *TINY, "--adapter", str(adapter_file)]
    began = time.monotonic()
    run = subprocess.run(
        [*command, "--out", str(tmp_path / "m.safetensors")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    refused(
        run, "pretrained weights of vit_tiny_patch16_224 are not in the local cache", "127.0.0.1 cannot be"
    )
    refused(run, "--checkpoint FILE", "--no-pretrained")
    assert time.monotonic() - began < 120  # the interpreter's start-up on a busy machine; no retries
    assert not (tmp_path / "m.safetensors").exists()


def test_a_library_warning_is_one_line_of_note():
    run = cli("params", "--model", "resnet18")
    assert run.returncode == 0 and "placement=block" in run.stdout
    assert run.stderr.startswith("repadapter: note: 16 adapter site(s)") and len(run.stderr.splitlines()) == 1
    assert "UserWarning" not in run.stderr and "inject(" not in run.stderr


# --- silent wrong answers, now refused ----------------------------------------------------------


def test_an_adapter_on_another_backbone_than_it_was_trained_on_is_refused(tmp_path):
    """The file says: random init, seed 3. The model it was saved from is not that init, so the
    backbone --no-pretrained rebuilds is another one: merging would deploy a wrong model."""
    import timm

    import repadapter as ra

    model = ra.perturb_adapters(
        ra.inject(timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=4))
    )
    record = {
        "model": "vit_tiny_patch16_224",
        "img_size": 32,
        "pretrained": False,
        "checkpoint": None,
        "seed": 3,
    }
    adapter = ra.save_adapter(model, tmp_path / "a.safetensors", backbone=record)
    run = cli("merge", *TINY, "--no-pretrained", "--adapter", adapter, "--out", tmp_path / "m.safetensors")
    refused(
        run,
        "was trained on another backbone than the one these flags build",
        "--no-pretrained (a random init, seed 3",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


def test_a_csv_label_of_minus_one_is_named_with_file_and_line(tmp_path):
    from tests.fixtures import make_csv_folder

    root = make_csv_folder(tmp_path / "data", labels=("0", "1"), per_class=2)
    (root / "test.csv").write_text((root / "test.csv").read_text() + "img/test_0_0.png,-1\n")
    run = cli("train", "--data", f"csv:{root}", *TINY_CLI_FLAGS, "--out", tmp_path / "run")
    refused(run, f"{root / 'test.csv'}:6: label -1 is not a class id")
    assert not (tmp_path / "run").exists()
