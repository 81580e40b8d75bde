"""Hugging Face image models and open_clip towers by name: what each builds, and the refusals."""

import json

import pytest
import torch
import transformers

from repadapter import RepAdapterError
from repadapter.families import family_of
from repadapter.families.factory import create_base
from repadapter.families.tower_classifier import TowerClassifier
from repadapter.families.video import is_video_model

SHAPE = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}


def test_hf_folders_build_classifiers_with_their_own_statistics(tmp_path):
    torch.manual_seed(0)
    transformers.ViTModel(transformers.ViTConfig(**SHAPE, intermediate_size=64)).save_pretrained(
        tmp_path / "vit"
    )
    vit = create_base(f"hf:{tmp_path / 'vit'}", 4)
    assert type(vit).__name__ == "ViTForImageClassification" and vit.classifier.out_features == 4
    assert vit.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and vit.pretrained_cfg["input_size"] == (3, 32, 32)
    assert family_of(vit).name == "hf_vit" and not is_video_model(f"hf:{tmp_path / 'vit'}")

    clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**SHAPE, intermediate_size=64))
    clip.save_pretrained(tmp_path / "clip")
    (tmp_path / "clip" / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3]}))
    model = create_base(f"hf:{tmp_path / 'clip'}", 3, drop_path=0.2)
    assert isinstance(model, TowerClassifier) and model.head.out_features == 3
    assert model.pretrained_cfg["mean"] == (0.1, 0.2, 0.3) and model.pretrained_cfg["classifier"] == "head"
    torch.testing.assert_close(model.tower.post_layernorm.weight, clip.post_layernorm.weight)
    sites = family_of(model).sites(model, "block")
    assert sites[0].host == "tower.encoder.layers.0.self_attn" and len(sites) == 4
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))  # stochastic depth only in training mode
    model.train()
    assert not torch.equal(model(x), model(x))

    with pytest.raises(RepAdapterError, match="runs at its checkpoint's input size 32; leave --img-size"):
        create_base(f"hf:{tmp_path / 'clip'}", 3, img_size=64)
    with pytest.raises(RepAdapterError, match="there is no folder"):
        create_base(f"hf:{tmp_path / 'missing'}", 3)


def test_an_uncached_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)  # an empty cache
    with pytest.raises(
        RepAdapterError, match="hf:org/vit is not in the local Hugging Face cache and HF_HUB_OFF"
    ):
        create_base("hf:org/vit", 3)


def test_open_clip_names_need_weights_that_are_here(monkeypatch):
    pytest.importorskip("open_clip")
    with pytest.raises(
        RepAdapterError, match="say which weights: open_clip:ViT-B-32@<tag> .*laion2b_s34b_b79k"
    ):
        create_base("open_clip:ViT-B-32", 3)
    with pytest.raises(RepAdapterError, match="ViT-B-32 has no pretrained tag 'nope'"):
        create_base("open_clip:ViT-B-32@nope", 3)
    with pytest.raises(RepAdapterError, match="unknown open_clip model 'ViT-Q-99'"):
        create_base("open_clip:ViT-Q-99", 3)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)  # an empty cache
    with pytest.raises(
        RepAdapterError, match="weights of open_clip:ViT-B-32@laion2b_s34b_b79k are not in the lo"
    ):
        create_base("open_clip:ViT-B-32@laion2b_s34b_b79k", 3)


def test_a_checkpoint_that_does_not_fill_the_model_is_refused(tmp_path):
    """A ViT folder whose weights are not all there would leave layers at their random init."""
    from safetensors.torch import load_file, save_file

    transformers.ViTModel(transformers.ViTConfig(**SHAPE, intermediate_size=64)).save_pretrained(
        tmp_path / "vit"
    )
    weights = tmp_path / "vit" / "model.safetensors"
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if "layer.1." not in k and "layers.1." not in k}, str(weights))
    with pytest.raises(RepAdapterError, match="does not hold every weight of a .*1"):
        create_base(f"hf:{tmp_path / 'vit'}", 3)


def test_merge_rebuilds_the_recorded_backbone_or_refuses(tmp_path, capsys):
    """The adapter file's backbone record works for hf: names: another checkpoint in the same
    folder is refused, naming the model to rebuild."""
    import repadapter as ra
    from repadapter.cli import main

    folder = tmp_path / "vit"
    torch.manual_seed(0)
    transformers.ViTModel(transformers.ViTConfig(**SHAPE, intermediate_size=64)).save_pretrained(folder)
    name = f"hf:{folder}"
    torch.manual_seed(0)  # as training seeds before it builds the base
    model = ra.perturb_adapters(ra.inject(create_base(name, 2)))
    record = {"model": name, "img_size": None, "pretrained": True, "checkpoint": None, "seed": 0}
    ra.save_adapter(model, tmp_path / "adapter.safetensors", backbone=record)
    merge = ["merge", "--model", name, "--adapter", str(tmp_path / "adapter.safetensors")]
    assert main([*merge, "--out", str(tmp_path / "a.safetensors")]) == 0

    torch.manual_seed(1)
    transformers.ViTModel(transformers.ViTConfig(**SHAPE, intermediate_size=64)).save_pretrained(folder)
    assert main([*merge, "--out", str(tmp_path / "b.safetensors")]) == 2
    assert f"trained on another backbone than the one these flags build; rebuild it with --model {name}" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "b.safetensors").exists()
