"""`repadapter bench training`: per-method step time and memory, each in its own process."""

import json

import torch
from torch import nn

from repadapter.cli import main
from repadapter_lab.benchmarks.training import saved_activation_bytes


def test_training_cost_per_method_against_full_fine_tuning(tmp_path):
    out = tmp_path / "training"
    args = ["bench", "training", "--model", "vit_tiny6_patch4_32", "--methods", "full", "repadapter"]
    assert main([*args, "--batch", "4", "--steps", "2", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads((out / "training.json").read_text())
    rows = result["methods"]
    assert list(rows) == ["full", "repadapter"]
    assert rows["full"]["time_vs_full"] == 1.0 and rows["full"]["memory_vs_full"] == 1.0
    assert rows["full"]["trained_params"] == 2_693_192 + 100 * 192 + 100 - 1544  # 100 classes, not 8
    assert rows["repadapter"]["trained_params"] < rows["full"]["trained_params"] / 50
    for row in rows.values():
        assert row["step_seconds"]["min"] <= row["step_seconds"]["median"] <= row["step_seconds"]["max"]
        assert row["peak_memory_bytes"] > 50 * 2**20  # a whole process: torch, model, activations
    # full fine-tuning keeps what every frozen weight's gradient would need; the adapters do not
    assert 0 < rows["repadapter"]["activations_vs_full"] < 1
    assert "| repadapter |" in (out / "training.md").read_text() and result["provenance"]["command"]


def test_the_floor_checkpointing_and_peft_lora_beside_the_methods(tmp_path):
    out = tmp_path / "training"
    methods = ["full", "floor", "repadapter", "repadapter+checkpointing", "peft-lora"]
    args = ["bench", "training", "--model", "vit_tiny6_patch4_32", "--methods", *methods]
    assert main([*args, "--batch", "2", "--steps", "1", "--threads", "1", "--out", str(out)]) == 0
    rows = json.loads((out / "training.json").read_text())["methods"]
    assert rows["floor"]["trained_params"] == 0 and rows["floor"]["activations_vs_floor"] == 1.0
    # every method back-propagates through the whole backbone: none keeps less than the floor
    floor = rows["floor"]["saved_activation_bytes"]
    assert all(
        row["saved_activation_bytes"] >= floor for n, row in rows.items() if n != "repadapter+checkpointing"
    )
    assert rows["repadapter+checkpointing"]["trained_params"] == rows["repadapter"]["trained_params"]
    assert (
        rows["repadapter+checkpointing"]["saved_activation_bytes"] < rows["floor"]["saved_activation_bytes"]
    )
    # PEFT's LoRA: rank 8 on qkv (6 blocks, 192 -> 576) and the 100-class head
    assert rows["peft-lora"]["trained_params"] == 6 * 8 * (192 + 576) + 100 * 192 + 100


def test_saved_activations_count_what_backward_needs_and_not_the_weights():
    layer = nn.Linear(64, 32)
    x = torch.randn(10, 64)
    # a trained weight's gradient needs the input (10 x 64 floats); the weight itself is not counted
    assert saved_activation_bytes(layer, lambda: layer(x).sum()) == 10 * 64 * 4
    layer.requires_grad_(False)
    assert saved_activation_bytes(layer, lambda: layer(x).sum()) == 0  # nothing needs a gradient
