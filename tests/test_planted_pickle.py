"""No file the library reads runs code: a planted pickle for every reader.

Each planted file holds a pickle whose unpickling creates a marker file. Every reader must
refuse it with a short message (the CLI: exit code 2, one or two lines, no traceback), leave
the marker uncreated, and leave the disk as it was.
"""

import pickle
import shutil

import pytest
import torch

import repadapter as ra
from tests.fixtures import IMAGE_MODEL, TINY_CLI_FLAGS, VIDEO_MODEL, assert_refused, leftovers, plant, run_cli

RUN_FLAGS = [*TINY_CLI_FLAGS, "--epochs", "2", "--scale", "1", "--selection", "none"]


@pytest.fixture(scope="module")
def trained_run(cli_world):
    """A finished two-epoch training run, to resume."""
    out = cli_world["root"] / "run"
    run = run_cli("train", "--data", cli_world["data"], "--out", out, *RUN_FLAGS)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "final" / "checkpoint.pt").is_file()
    return out


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("archive", [True, False])
def test_a_planted_payload_runs_when_unpickled_unsafely(tmp_path, archive):
    """The payload works: the tests below would fail if a reader unpickled it."""
    path = plant(tmp_path / "planted.pt", tmp_path / "PWNED", archive)
    if archive:
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("archive", [True, False])
def test_resume_refuses_a_planted_checkpoint(cli_world, trained_run, tmp_path, archive):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    plant(out / "final" / "checkpoint.pt", tmp_path / "PWNED", archive)
    before = _snapshot(out)
    run = run_cli("train", "--data", cli_world["data"], "--out", out, *RUN_FLAGS, "--resume")
    assert_refused(run, "checkpoint.pt holds Python objects other than tensors", "not loaded")
    assert not (tmp_path / "PWNED").exists()
    assert _snapshot(out) == before and not leftovers(tmp_path)


@pytest.mark.parametrize(
    "name, message",
    [
        ("base.pth", "base.pth holds Python objects other than tensors"),
        ("base.safetensors", "base.safetensors is a pickle (torch.save) file, not a safetensors"),
    ],
)
def test_a_planted_base_checkpoint_is_refused(cli_world, tmp_path, name, message):
    checkpoint = plant(tmp_path / name, tmp_path / "PWNED")
    out = tmp_path / "merged.safetensors"
    run = run_cli(
        "merge",
        "--model",
        IMAGE_MODEL,
        "--checkpoint",
        checkpoint,
        "--adapter",
        cli_world["image"],
        "--out",
        out,
    )
    assert_refused(run, message)
    assert not (tmp_path / "PWNED").exists() and not out.exists() and not leftovers(tmp_path)


def test_a_planted_video_base_checkpoint_is_refused(cli_world, tmp_path):
    checkpoint = plant(tmp_path / "video.pt", tmp_path / "PWNED")
    out = tmp_path / "merged.safetensors"
    run = run_cli(
        "merge",
        "--model",
        VIDEO_MODEL,
        "--checkpoint",
        checkpoint,
        "--adapter",
        cli_world["video"],
        "--out",
        out,
    )
    assert_refused(run, "video.pt holds Python objects other than tensors")
    assert not (tmp_path / "PWNED").exists() and not out.exists() and not leftovers(tmp_path)


def test_a_planted_hugging_face_video_folder_is_refused(cli_world, tmp_path):
    import transformers

    folder = tmp_path / "videomae"
    transformers.VideoMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        folder
    )
    plant(folder / "pytorch_model.bin", tmp_path / "PWNED")
    out = tmp_path / "merged.safetensors"
    run = run_cli("merge", "--model", f"hf:{folder}", "--adapter", cli_world["video"], "--out", out)
    assert_refused(run, f"{folder} holds Python objects other than tensors")
    assert not (tmp_path / "PWNED").exists() and not out.exists() and not leftovers(tmp_path)


def test_eval_refuses_planted_merged_weights(cli_world, tmp_path):
    weights = plant(tmp_path / "merged.safetensors", tmp_path / "PWNED")
    run = run_cli(
        "eval", "--model", IMAGE_MODEL, "--weights", weights, "--data", cli_world["data"], "--workers", "0"
    )
    assert_refused(
        run,
        "merged.safetensors is a pickle (torch.save) file, not a safetensors merged checkpoint (--weights)",
    )
    assert not (tmp_path / "PWNED").exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("command", ["eval", "merge", "export"])
def test_a_planted_adapter_file_is_refused(cli_world, tmp_path, command):
    adapter = plant(tmp_path / "adapter.safetensors", tmp_path / "PWNED", archive=command != "merge")
    out = tmp_path / "out.file"
    flags = {
        "eval": ["--data", cli_world["data"], "--workers", "0"],
        "merge": ["--out", out],
        "export": ["--torchscript", out],
    }[command]
    run = run_cli(command, "--model", IMAGE_MODEL, "--adapter", adapter, *flags)
    assert_refused(run, "adapter.safetensors is a pickle (torch.save) file, not a safetensors adapter file")
    assert not (tmp_path / "PWNED").exists() and not out.exists() and not leftovers(tmp_path)


def test_the_library_readers_refuse_planted_files(tmp_path):
    from repadapter.files import read_adapter_file, read_tensor_file
    from repadapter.training.trainer import read_checkpoint

    marker = tmp_path / "PWNED"
    planted = plant(tmp_path / "planted.safetensors", marker)
    for read in (read_adapter_file, read_tensor_file):
        with pytest.raises(ra.RepAdapterError, match="planted.safetensors is a pickle"):
            read(planted)
    with pytest.raises(ra.RepAdapterError, match="checkpoint.pt holds Python objects"):
        read_checkpoint(plant(tmp_path / "checkpoint.pt", marker))
    for folder, name in (
        (tmp_path / "adapter", "adapter_model.safetensors"),
        (tmp_path / "merged", "model.safetensors"),
    ):
        folder.mkdir()
        (folder / "config.json").write_text('{"architecture": "vit_tiny6_patch4_32", "num_classes": 2}')
        plant(folder / name, marker)
        with pytest.raises(ra.RepAdapterError, match=f"{name} is a pickle"):
            ra.from_pretrained(folder)
    assert not marker.exists()


def test_peft_loads_a_planted_adapter_without_running_it(tmp_path):
    peft = pytest.importorskip("peft")
    import timm

    import repadapter.peft_plugin as rp

    def vit():
        return timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=2)

    peft.get_peft_model(vit(), rp.RepAdapterPeftConfig()).save_pretrained(tmp_path)
    (tmp_path / "adapter_model.safetensors").unlink()
    plant(tmp_path / "adapter_model.bin", tmp_path / "PWNED")
    with pytest.raises(pickle.UnpicklingError):
        peft.PeftModel.from_pretrained(vit(), tmp_path)
    assert not (tmp_path / "PWNED").exists()
