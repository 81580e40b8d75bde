"""`repadapter convert`: official RepAdapter checkpoints as adapter files, checked against a
re-derivation of the official forward."""

import copy
import os
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

import repadapter as ra
from repadapter.cli import main
from repadapter.files import read_adapter_file
from tests.conftest import build_vit, input_for

CLASSES = 5


def official_checkpoint(depth, width, placement, dim=8, groups=2, classes=CLASSES, seed=0):
    """What the official train.py saves: every parameter named *adapter* or *head*, random here."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(depth):
        for module in ("attn", "mlp") if placement == "block" else ("attn",):
            prefix = f"blocks.{i}.adapter_{module}"
            state[f"{prefix}.conv_A.weight"] = torch.randn(dim, width, 1, generator=g) * 0.1
            state[f"{prefix}.conv_A.bias"] = torch.randn(dim, generator=g) * 0.1
            state[f"{prefix}.conv_B.weight"] = torch.randn(width, dim // groups, 1, generator=g) * 0.1
            state[f"{prefix}.conv_B.bias"] = torch.randn(width, generator=g) * 0.1
    state["head.weight"] = torch.randn(classes, width, generator=g) * 0.1
    state["head.bias"] = torch.randn(classes, generator=g) * 0.1
    return state


def official_adapter(x, state, prefix, scale, groups):
    """The official adapter on (B, N, C) tokens: x + s * conv_B(dropout(conv_A(x))) over the token
    dimension, conv_A a dense 1x1 Conv1d, conv_B a grouped one (dropout is off in eval)."""
    channels = x.transpose(1, 2)
    hidden = nn.functional.conv1d(channels, state[f"{prefix}.conv_A.weight"], state[f"{prefix}.conv_A.bias"])
    up = nn.functional.conv1d(
        hidden, state[f"{prefix}.conv_B.weight"], state[f"{prefix}.conv_B.bias"], groups=groups
    )
    return (channels + scale * up).transpose(1, 2)


def official_logits(model, state, scale, placement, x, groups=2):
    """The official model: each timm Block's forward replaced by the official one (adapter on
    norm1(x) before attention and, for repblock, on norm2(x) before the MLP; no LayerScale), and
    the official head loaded."""
    model = copy.deepcopy(model).eval()
    for i, block in enumerate(model.blocks):

        def forward(self, x, i=i):
            h = official_adapter(self.norm1(x), state, f"blocks.{i}.adapter_attn", scale, groups)
            x = x + self.drop_path1(self.attn(h))
            h = self.norm2(x)
            if placement == "block":
                h = official_adapter(h, state, f"blocks.{i}.adapter_mlp", scale, groups)
            return x + self.drop_path1(self.mlp(h))

        block.forward = types.MethodType(forward, block)
    with torch.no_grad():
        model.head.weight.copy_(state["head.weight"])
        model.head.bias.copy_(state["head.bias"])
        return model(x)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "repadapter.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("placement", "scale_flags", "scale"),
    [("attn", ["--scale", "0.5"], 0.5), ("block", ["--scale", "paper", "--task", "caltech101"], 5.0)],
)
def test_converted_checkpoint_gives_the_official_logits(tmp_path, placement, scale_flags, scale):
    base = build_vit("vit_tiny", num_classes=CLASSES, img_size=32)
    state = official_checkpoint(depth=12, width=192, placement=placement)
    torch.save(state, tmp_path / "official.pt")
    out = tmp_path / "adapter.safetensors"
    flags = ["--placement", placement] if placement == "block" else []
    run = run_cli(
        "convert", "--official", str(tmp_path / "official.pt"), "--model", "vit_tiny_patch16_224",
        *scale_flags, *flags, "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"placement {placement}, dim 8, groups 2, scale {scale:g}, {CLASSES} classes" in run.stdout
    file = read_adapter_file(out)
    assert (file.config.placement, file.config.scale, file.metadata["num_classes"]) == (placement, scale, 5)

    x = input_for(base, batch=3)
    expected = official_logits(base, state, scale, placement, x)
    loaded = ra.load_adapter(copy.deepcopy(base), out).eval()
    with torch.no_grad():
        ours, merged = loaded(x), ra.merge(loaded)(x)
    assert (expected - official_logits(base, state, 0.0, placement, x)).abs().max() > 1e-2  # adapters matter
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(merged, expected, atol=2e-5, rtol=1e-4)


class Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_payload_is_not_run(tmp_path):
    marker = tmp_path / "payload-ran"
    state = official_checkpoint(depth=12, width=192, placement="attn")
    state["head.extra"] = Payload(marker)
    torch.save(state, tmp_path / "evil.pt")
    run = run_cli(
        "convert", "--official", str(tmp_path / "evil.pt"), "--model", "vit_tiny_patch16_224",
        "--scale", "1", "--out", str(tmp_path / "a.safetensors"),
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.startswith("repadapter: error:") and "Traceback" not in run.stderr
    assert "holds Python objects other than tensors" in run.stderr and len(run.stderr) < 600
    assert not marker.exists() and not (tmp_path / "a.safetensors").exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()


def test_checkpoints_that_do_not_fit_are_refused(tmp_path, capsys):
    def convert(state, model, *extra):
        torch.save(state, tmp_path / "c.pt")
        args = ["convert", "--official", str(tmp_path / "c.pt"), "--model", model, "--out"]
        code = main([*args, str(tmp_path / "a.safetensors"), *extra])
        return code, capsys.readouterr().err

    attn = official_checkpoint(depth=12, width=384, placement="attn")
    code, err = convert(attn, "deit3_small_patch16_224", "--scale", "1")
    assert code == 2 and "has LayerScale (blocks.0.ls1 / ls2)" in err
    code, err = convert(attn, "vit_tiny_patch16_224", "--scale", "1")
    assert code == 2 and "12 blocks of width 384, vit_tiny_patch16_224 has 12 blocks of width 192" in err
    code, err = convert(attn, "vit_small_patch16_224", "--scale", "1", "--placement", "block")
    assert code == 2 and "holds the official repattn layout" in err
    code, err = convert(attn, "vit_small_patch16_224", "--scale", "paper")
    assert code == 2 and "--scale paper needs --task" in err
    prefixed = {**attn, "module.blocks.0.x": torch.zeros(1)}
    code, err = convert(prefixed, "vit_small_patch16_224", "--scale", "1")
    assert code == 2 and "keys the official ViT layout does not (module.blocks.0.x)" in err
    del attn["blocks.3.adapter_attn.conv_B.bias"]
    code, err = convert(attn, "vit_small_patch16_224", "--scale", "1")
    assert code == 2 and "lacks blocks.3.adapter_attn.conv_B.bias" in err
    assert not (tmp_path / "a.safetensors").exists()


def test_the_readme_scale_table_is_the_one_paper_scale_uses():
    from pathlib import Path

    from repadapter.training.data.vtab import PAPER_SCALES

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = text.split("  | task | repblock | repattn |\n  |---|---|---|\n")[1].split("\n\n")[0]
    rows = [line.strip(" |").split(" | ") for line in table.splitlines()]
    assert {task: (float(b), float(a)) for task, b, a in rows} == PAPER_SCALES
