"""`repadapter bench accuracy`: variants x tasks, resumable, one comparison table."""

import json

import pytest

from repadapter import RepAdapterError
from repadapter.cli import main
from repadapter_lab.benchmarks.accuracy import render_comparison, run_accuracy, variant_config
from tests.fixtures import make_vtab_task, tiny_recipe


def test_unknown_variants_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(RepAdapterError, match="unknown method variant 'prompt'; variants: repadapter-block"):
        run_accuracy(tmp_path, ["linear", "prompt"], tiny_recipe(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert variant_config(tiny_recipe(), "linear-random-init").pretrained is False


def test_variants_share_the_recipe_and_land_in_one_table(tmp_path, capsys):
    for task, classes in (("cifar", 3), ("dsprites_loc", 2)):
        make_vtab_task(tmp_path / "suite", task, train=8, val=4, test=6, classes=classes)
    out, recipe = tmp_path / "bench", tmp_path / "recipe.yaml"
    recipe.write_text("pretrained: false\nwarmup_epochs: 0\nbatch_size: 4\nworkers: 0\nepochs: 3\n")
    args = ["bench", "accuracy", "--root", str(tmp_path / "suite"), "--out", str(out), "--quiet"]
    args += [
        "--methods",
        "repadapter-attn",
        "linear",
        "lora",
        "vpt-deep",
        "--epochs",
        "1",
        "--config",
        str(recipe),
    ]
    args += ["--model", "vit_tiny_patch16_224", "--img-size", "32"]
    assert main(args) == 0
    result = json.loads((out / "accuracy.json").read_text())
    rows = result["variants"]
    assert list(rows) == ["repadapter-attn", "linear", "lora", "vpt-deep"]
    for variant, row in rows.items():
        assert set(row["tasks"]) == {"cifar", "dsprites_loc"}
        assert row["group_means"]["specialized"] is None and row["config"]["epochs"] == 1  # flag wins
        assert row["config"]["batch_size"] == 4 and row["config"]["method"] == variant.removesuffix("-attn")
        assert row["task_commits"] == [result["provenance"]["git_commit"]]
        assert 0 < row["trained_percent_of_backbone"] < 100
    assert rows["linear"]["trained_params_m"] < rows["repadapter-attn"]["trained_params_m"]
    # LoRA rank 8 on qkv: (192 + 576) * 8 per block, 12 blocks, on top of the head
    assert 1e6 * (rows["lora"]["trained_params_m"] - rows["linear"]["trained_params_m"]) == pytest.approx(
        12 * 768 * 8
    )
    assert (out / "vpt-deep" / "cifar" / "trained.safetensors").is_file()
    text = (out / "accuracy.md").read_text()
    assert text == render_comparison(result)
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    line = next(x for x in text.splitlines() if x.startswith("| linear |"))
    assert f"**{rows['linear']['paper_average']:.1f}**" in line
    first = (out / "linear" / "cifar" / "summary.json").read_text()
    assert main(args) == 0  # finished tasks are kept, not retrained
    assert (out / "linear" / "cifar" / "summary.json").read_text() == first
