"""Hub folders for adapters and merged models; the Hub download path, against local folders."""

import json
import os

import pytest
import timm
import torch

import repadapter as ra
from repadapter.tuner import hub
from tests.conftest import build_vit, input_for


@pytest.fixture
def trained():
    return ra.perturb_adapters(ra.inject(build_vit("vit_tiny", depth=2, img_size=32)), seed=5).eval()


def test_adapter_folder_round_trip_and_card(trained, tmp_path):
    folder = ra.save_pretrained(trained, tmp_path / "adapter", metrics={"test_acc": 0.875}, task="dtd")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["method"] == "repadapter" and config["num_classes"] == 10
    card = (folder / "README.md").read_text()
    assert "base_model: timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k" in card
    assert "| test_acc | 0.875 |" in card and "on dtd" in card and "ra.from_pretrained" in card
    assert f"{ra.count_parameters(trained).trainable:,}" in card

    base = build_vit("vit_tiny", depth=2, img_size=32)  # the same base weights
    loaded = ra.from_pretrained(folder, model=base)
    x = input_for(trained)
    with torch.no_grad():
        assert torch.equal(loaded(x), trained(x))


def test_adapter_folder_builds_its_named_base_model(trained, tmp_path):
    """The base's constructor arguments are recorded: a 2-block, 32 px vit_tiny comes back as one."""
    folder = ra.save_pretrained(trained, tmp_path / "adapter")
    assert json.loads((folder / "adapter_config.json").read_text())["base_kwargs"]["depth"] == 2
    loaded = ra.from_pretrained(folder, base_pretrained=False)
    assert len(loaded.blocks) == 2 and tuple(loaded.patch_embed.img_size) == (32, 32)
    adapters = {n: p for n, p in trained.state_dict().items() if ".repadapter." in n}
    assert adapters and all(torch.equal(loaded.state_dict()[n], p) for n, p in adapters.items())


def test_adapter_folder_of_an_unrecordable_base_asks_for_the_model(trained, tmp_path):
    from repadapter.files import read_adapter_file, write_adapter_file

    folder = ra.save_pretrained(trained, tmp_path / "adapter")
    described = json.loads((folder / "adapter_config.json").read_text())
    file = read_adapter_file(folder / "adapter_model.safetensors")
    write_adapter_file(
        folder / "adapter_model.safetensors", file.tensors, {**file.metadata, "base_kwargs": None}
    )
    with pytest.raises(ra.RepAdapterError, match="could not record; build that model and pass model="):
        ra.from_pretrained(folder, base_pretrained=False)
    assert described["base_kwargs"] is not None


def test_adapter_folder_fails_fast_offline_with_the_fix(tmp_path):
    import subprocess
    import sys
    import time

    model = ra.inject(timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=3))
    folder = ra.save_pretrained(model, tmp_path / "adapter")
    code = (
        "import sys, repadapter as ra\n"
        "try:\n    ra.from_pretrained(sys.argv[1])\nexcept ra.RepAdapterError as e:\n    print(e)"
    )
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env, timeout=120
    )
    assert "cannot be reached (offline?). Pass model=<the base model>" in run.stdout, run.stderr[-2000:]
    assert time.monotonic() - start < 30


def test_merged_folder_loads_with_plain_timm(trained, tmp_path):
    folder = ra.save_pretrained(ra.merge(trained), tmp_path / "merged")
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in folder.iterdir()}
    plain = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    again = ra.from_pretrained(folder).eval()
    x = input_for(trained)
    with torch.no_grad():
        assert (plain(x) - trained(x)).abs().max() <= 1e-5
        assert torch.equal(again(x), plain(x))
    assert "library_name: timm" in (folder / "README.md").read_text()


def test_a_merged_model_that_timm_cannot_load_is_refused(tmp_path):
    from repadapter.training.tasks.segmentation import Segmenter

    segmenter = Segmenter(build_vit("vit_tiny", depth=1, img_size=32, num_classes=0), 3)
    merged = ra.merge(ra.perturb_adapters(ra.inject(segmenter)))
    with pytest.raises(ra.RepAdapterError, match="saves merged timm models .* a segmenter model"):
        ra.save_pretrained(merged, tmp_path / "merged")
    assert not (tmp_path / "merged" / "config.json").exists()


def test_repo_ids_go_through_the_hub_download(trained, tmp_path, monkeypatch):
    folder = ra.save_pretrained(trained, tmp_path / "adapter")
    asked = {}

    def fake_snapshot_download(repo_id, allow_patterns):
        asked.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(folder)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = ra.from_pretrained("someone/vit-tiny-dtd", model=build_vit("vit_tiny", depth=2, img_size=32))
    assert asked["repo_id"] == "someone/vit-tiny-dtd" and hub.ADAPTER_WEIGHTS in asked["allow_patterns"]
    assert ra.has_adapters(loaded)


def test_unknown_sources_are_explained(tmp_path):
    with pytest.raises(ra.RepAdapterError, match="neither a folder nor a Hub repo id"):
        ra.from_pretrained(tmp_path / "no" / "such" / "place")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ra.RepAdapterError, match="holds neither adapter_model.safetensors"):
        ra.from_pretrained(tmp_path / "empty")


def test_cards_and_loading_follow_the_family(tmp_path):
    pytest.importorskip("transformers")
    from repadapter_lab.benchmarks.support import _hf

    hf = ra.perturb_adapters(ra.inject(_hf("vit", (32, 32))), seed=1).eval()
    folder = ra.save_pretrained(hf, tmp_path / "hf")
    card = (folder / "README.md").read_text()
    assert "hf_vit model" in card and "base_model: timm/" not in card and "model=base" in card
    assert "`q_proj`" in card and "`fc1`" in card
    with pytest.raises(ra.RepAdapterError, match="adapts a hf_vit model.*pass model="):
        ra.from_pretrained(folder)
    loaded = ra.from_pretrained(folder, model=_hf("vit", (32, 32))).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, hf(x).logits)

    cnn = ra.inject(timm.create_model("resnet18", num_classes=3))
    card = (ra.save_pretrained(cnn, tmp_path / "cnn") / "README.md").read_text()
    assert "base_model: timm/resnet18" in card and "timm_resnet model" in card and "`conv1`" in card
