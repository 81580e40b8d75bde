"""RepAdapter through PEFT's own API, on a timm ViT and a Hugging Face ViT."""

import pytest
import timm
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

import repadapter.peft_plugin as rp  # noqa: E402
from repadapter import RepAdapterError  # noqa: E402


def timm_vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=5).eval()


def hf_vit():
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=3,
    )
    return transformers.ViTForImageClassification(config).eval()


def randomize(model):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "repadapter_" in name:
                param.normal_(std=0.05)
    return model.eval()


def test_get_peft_model_trains_only_adapters_and_saved_modules():
    model = peft.get_peft_model(timm_vit(), rp.RepAdapterPeftConfig(modules_to_save=["head"]))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("repadapter_" in n or "head" in n for n in trained)
    assert sum("repadapter_" in n for n in trained) == 2 * 2 * 4  # 2 blocks x (qkv, fc1) x 4 tensors
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), timm_vit()(x))  # fresh adapters are the identity


def test_save_load_and_merge_and_unload_on_timm(tmp_path):
    model = randomize(peft.get_peft_model(timm_vit(), rp.RepAdapterPeftConfig(modules_to_save=["head"])))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    model.save_pretrained(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    loaded = peft.PeftModel.from_pretrained(timm_vit(), tmp_path).eval()
    merged = loaded.merge_and_unload()
    vanilla = timm_vit()
    vanilla.load_state_dict(merged.state_dict(), strict=True)
    with torch.no_grad():
        assert (vanilla(x) - expected).abs().max() <= 1e-5


def test_merge_and_unmerge_adapter_round_trip_on_hugging_face_vit():
    base = hf_vit()
    # default targets: one adapter on the input q_proj / k_proj / v_proj share, one on mlp.fc1
    model = randomize(peft.get_peft_model(hf_vit(), rp.RepAdapterPeftConfig(groups=4)))
    x = torch.randn(2, 3, 32, 32)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with torch.no_grad():
        expected = model(pixel_values=x).logits
        model.merge_adapter()
        assert (model(pixel_values=x).logits - expected).abs().max() <= 1e-5
        model.unmerge_adapter()
        assert (model(pixel_values=x).logits - expected).abs().max() <= 1e-5
    restored = model.unload().state_dict()
    assert max((restored[k] - v).abs().max().item() for k, v in before.items()) <= 1e-6


def test_non_linear_targets_are_refused():
    with pytest.raises(RepAdapterError, match="norm1 is a LayerNorm"):
        peft.get_peft_model(timm_vit(), rp.RepAdapterPeftConfig(target_modules=["norm1"]))


def test_the_core_never_imports_peft():
    import subprocess
    import sys

    modules = "repadapter, repadapter.cli, repadapter.engine.protocol, repadapter.hub, repadapter.export"
    code = f"import sys, {modules}; print('peft' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "False", run.stderr
