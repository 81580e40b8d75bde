"""The files the command line reads and writes: damaged or foreign files are refused with a
short message and leave nothing behind; identical inputs give identical files."""

import pytest
from safetensors import safe_open

import repadapter as ra
from repadapter.files import save_tensor_file
from tests.fixtures import IMAGE_MODEL, VIDEO_MODEL, assert_refused, leftovers, run_cli


def _poisoned(path, out, name, value):
    """A copy of the safetensors file ``path`` whose tensor ``name`` holds one ``value``."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = f.metadata()
    tensors[name].view(-1)[0] = value
    return save_tensor_file(out, tensors, header)


def test_the_same_merge_twice_writes_the_same_bytes(cli_world, tmp_path):
    outs = [tmp_path / "one.safetensors", tmp_path / "two.safetensors"]
    for out in outs:
        run = run_cli("merge", "--model", IMAGE_MODEL, "--adapter", cli_world["image"], "--out", out)
        assert run.returncode == 0, run.stderr[-3000:]
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert not leftovers(tmp_path)


def test_non_finite_adapters_and_merged_weights_are_refused(cli_world, tmp_path):
    name = "blocks.2.mlp.repadapter.down.weight"
    adapter = _poisoned(cli_world["image"], tmp_path / "nan.safetensors", name, float("nan"))
    out = tmp_path / "merged.safetensors"
    message = f"tensor {name} holds 1 NaN or infinite value"
    assert_refused(run_cli("merge", "--model", IMAGE_MODEL, "--adapter", adapter, "--out", out), message)
    assert not out.exists()
    evaluate = ["eval", "--model", IMAGE_MODEL, "--data", cli_world["data"], "--workers", "0"]
    assert_refused(run_cli(*evaluate, "--adapter", adapter), message)

    assert (
        run_cli("merge", "--model", IMAGE_MODEL, "--adapter", cli_world["image"], "--out", out).returncode
        == 0
    )
    weights = _poisoned(out, tmp_path / "inf.safetensors", "head.bias", float("inf"))
    assert_refused(run_cli(*evaluate, "--weights", weights), "inf.safetensors: tensor head.bias holds 1 NaN")
    assert not leftovers(tmp_path)


@pytest.fixture(scope="module")
def foreign_files(cli_world, tmp_path_factory):
    """A segmenter adapter on the packaged ViT, and a random ConvNeXt base checkpoint."""
    import timm

    from repadapter.families.factory import create_base
    from repadapter.training.tasks.segmentation import Segmenter

    root = tmp_path_factory.mktemp("foreign")
    segmenter = ra.inject(Segmenter(create_base(IMAGE_MODEL, 0), 5))
    convnext = timm.create_model("convnext_atto", num_classes=2).state_dict()
    return {
        "segmenter": ra.save_adapter(segmenter, root / "segmenter.safetensors"),
        "convnext": save_tensor_file(root / "convnext.safetensors", convnext),
    }


@pytest.mark.parametrize(
    "kind, model, messages",
    [
        ("video", [IMAGE_MODEL], ["is for model family 'hf_videomae'", f"pass --model {VIDEO_MODEL}"]),
        ("image", [VIDEO_MODEL], ["is for model family 'timm_vit'", f"pass --model {IMAGE_MODEL}"]),
        (
            "image",
            ["convnext_atto", "--checkpoint", "convnext"],
            ["for model family 'timm_vit'", "'timm_convnext'"],
        ),
        (
            "segmenter",
            [IMAGE_MODEL],
            ["is for model family 'segmenter' with a 'timm_vit' backbone", "but this model is 'timm_vit'"],
        ),
    ],
)
def test_an_adapter_of_another_family_names_its_family(
    cli_world, foreign_files, tmp_path, kind, model, messages
):
    files = {**cli_world, **foreign_files}
    model = [str(files.get(flag, flag)) for flag in model]
    adapter = files[kind]
    out = tmp_path / "merged.safetensors"
    if kind == "segmenter":  # a classification --data builds a classifier
        run = run_cli(
            "eval", "--model", *model, "--adapter", adapter, "--data", cli_world["data"], "--workers", "0"
        )
    else:
        run = run_cli("merge", "--model", *model, "--adapter", adapter, "--out", out)
    assert_refused(run, *messages)
    assert "sites" not in run.stderr and not out.exists() and not leftovers(tmp_path)


KILLED_MIDWAY = """
import sys
import time

import repadapter.files as files
from repadapter.cli import main

real = files.atomic_write


def slow(path, write):  # a write that is still going when the kill comes
    def half_then_wait(tmp):
        tmp.write_bytes(b"half a file")
        time.sleep(120)

    return real(path, half_then_wait)


files.atomic_write = slow
sys.exit(main(sys.argv[1:]))
"""


def test_a_merge_killed_while_writing_leaves_no_temporary(cli_world, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "merged.safetensors"
    args = ["merge", "--model", IMAGE_MODEL, "--adapter", str(cli_world["image"]), "--out", str(out)]
    command = [sys.executable, "-c", KILLED_MIDWAY, *args]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not leftovers(tmp_path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p.name.endswith(".partial") and p.name.startswith(".") for p in leftovers(tmp_path)] == [True]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr
    assert not out.exists() and not leftovers(tmp_path)
