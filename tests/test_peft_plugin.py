"""RepAdapter through PEFT's own API, on a timm ViT and a Hugging Face ViT."""

import pytest
import timm
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

import repadapter.peft_plugin as rp  # noqa: E402
from repadapter import RepAdapterError  # noqa: E402
from tests.fixtures import tiny_hf_vit  # noqa: E402


def timm_vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=5).eval()


def hf_vit():
    return tiny_hf_vit(num_labels=3).eval()


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

    modules = ", ".join(
        [
            "repadapter",
            "repadapter.cli",
            "repadapter.training.protocol",
            "repadapter.tuner.hub",
            "repadapter.export.formats",
        ]
    )
    code = f"import sys, {modules}; print('peft' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "False", run.stderr


def test_a_saved_config_says_what_to_import_and_peft_needs_it(tmp_path):
    import json
    import subprocess
    import sys

    peft.get_peft_model(timm_vit(), rp.RepAdapterPeftConfig()).save_pretrained(tmp_path)
    assert (
        "import repadapter.peft_plugin"
        in json.loads((tmp_path / "adapter_config.json").read_text())["load_with"]
    )
    code = (
        "import sys, timm, peft\n"
        "base = timm.create_model('vit_tiny_patch16_224', img_size=32, depth=2, num_classes=5)\n"
        "try:\n    peft.PeftModel.from_pretrained(base, sys.argv[1])\n"
        "except KeyError as err:\n    print('KeyError', err)\n"
        "import repadapter.peft_plugin\n"
        "peft.PeftModel.from_pretrained(base, sys.argv[1])\nprint('loaded')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert run.stdout.split() == ["KeyError", "'REPADAPTER'", "loaded"], run.stderr[-2000:]


def test_each_folder_format_names_its_loader(tmp_path):
    import repadapter as ra

    ra.save_pretrained(ra.inject(timm_vit()), tmp_path / "core")
    with pytest.raises(
        RepAdapterError, match=r"written by repadapter.save_pretrained.*repadapter.from_pretrained"
    ):
        peft.PeftModel.from_pretrained(timm_vit(), tmp_path / "core")
    peft.get_peft_model(timm_vit(), rp.RepAdapterPeftConfig()).save_pretrained(tmp_path / "peft")
    with pytest.raises(RepAdapterError, match="PEFT adapter folder.*import repadapter.peft_plugin"):
        ra.from_pretrained(tmp_path / "peft", model=timm_vit())
    with pytest.raises(RepAdapterError, match="A PEFT adapter_model.safetensors loads through PEFT"):
        ra.load_adapter(timm_vit(), tmp_path / "peft" / "adapter_model.safetensors")
    assert ra.from_pretrained(tmp_path / "core", model=timm_vit()) is not None  # its own loader still works


def test_layers_to_transform_adapts_only_those_layers():
    config = rp.RepAdapterPeftConfig(layers_to_transform=[1], layers_pattern="blocks")
    model = peft.get_peft_model(timm_vit(), config)
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, rp.RepAdapterLayer))
    assert wrapped == ["base_model.model.blocks.1.attn.qkv", "base_model.model.blocks.1.mlp.fc1"]


def test_low_cpu_mem_usage_creates_adapters_on_meta_and_loads_them(tmp_path):
    model = randomize(peft.get_peft_model(timm_vit(), rp.RepAdapterPeftConfig()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    model.save_pretrained(tmp_path)
    empty = peft.get_peft_model(timm_vit(), rp.RepAdapterPeftConfig(), low_cpu_mem_usage=True)
    adapters = [p for n, p in empty.named_parameters() if "repadapter_" in n]
    assert adapters and all(p.device.type == "meta" for p in adapters)
    loaded = peft.PeftModel.from_pretrained(timm_vit(), tmp_path, low_cpu_mem_usage=True).eval()
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)


def test_init_weights_false_starts_away_from_the_identity():
    x = torch.randn(2, 3, 32, 32)
    model = peft.get_peft_model(timm_vit(), rp.RepAdapterPeftConfig(init_weights=False)).eval()
    with torch.no_grad():
        assert (model(x) - timm_vit()(x)).abs().max() > 1e-3


class AttentionBlock(torch.nn.Module):
    """open_clip's residual attention block in short: self-attention through nn.MultiheadAttention."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(16), torch.nn.LayerNorm(16)
        self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=batch_first)
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc(self.ln_2(x))


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_targets_merge_exactly_and_mix_batches(batch_first):
    torch.manual_seed(0)
    # a Linear's mixed batch is along its input's first dim (as with LoRA): fc only when batch-first
    targets = ["attn", "fc"] if batch_first else ["attn"]
    config = rp.RepAdapterPeftConfig(target_modules=targets, init_weights=False)
    model = peft.get_peft_model(AttentionBlock(batch_first).eval(), config).eval()
    x = torch.randn(3, 5, 16) if batch_first else torch.randn(5, 3, 16)
    with torch.no_grad():
        expected = model(x)
        with model.disable_adapter():
            base = model(x)
        mixed = model(x, adapter_names=["default", "__base__", "default"])
        rows = (slice(None), 1) if not batch_first else (1,)
        assert (mixed[rows] - base[rows]).abs().max() <= 1e-6
        assert (mixed - expected).abs().amax(dim=-1).max() > 1e-3  # the __base__ row differs
        assert (model.merge_and_unload()(x) - expected).abs().max() <= 1e-5


def test_conv2d_targets_merge_exactly_and_padded_ones_get_bias_free_adapters():
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 1)).eval()
    model = randomize(peft.get_peft_model(base, rp.RepAdapterPeftConfig(target_modules=["0", "1"], dim=4)))
    padded, pointwise = model.base_model.model[0], model.base_model.model[1]
    assert (
        padded.repadapter_down["default"].bias is None
        and pointwise.repadapter_down["default"].bias is not None
    )
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        expected = model(x)
        assert (model.merge_and_unload()(x) - expected).abs().max() <= 1e-5


def test_folders_of_the_first_plugin_version_load_under_any_name(tmp_path):
    from safetensors.torch import load_file, save_file

    model = randomize(peft.get_peft_model(timm_vit(), rp.RepAdapterPeftConfig()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    model.save_pretrained(tmp_path)
    file = tmp_path / "adapter_model.safetensors"
    old = {  # the first version's keys: ...qkv.repadapter_adapters.default.down.weight
        k.replace(f".repadapter_{part}.", f".repadapter_adapters.default.{part}."): v
        for k, v in load_file(file).items()
        for part in ("down", "up")
        if f".repadapter_{part}." in k
    }
    save_file(old, file)
    loaded = peft.PeftModel.from_pretrained(timm_vit(), tmp_path, adapter_name="other").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
