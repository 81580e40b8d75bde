"""timm Swin: sites in every block of every stage; exact merges, with and without padding."""

import pytest
import timm
import torch

import repadapter as ra
from repadapter.families import family_of

DEPTHS = (1, 1, 2, 1)


def swin(**kwargs):
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", depths=DEPTHS, num_classes=7, **kwargs)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.02)  # off zero, so bias folding is exercised
    return model.eval()


def test_sites_and_head():
    model = swin()
    family = family_of(model)
    sites = family.sites(model, "block")
    assert family.name == "timm_swin" and len(sites) == 2 * sum(DEPTHS)
    assert sites[0].host == "layers.0.blocks.0.attn" and sites[0].bias_sink is None
    assert sites[1].host == "layers.0.blocks.0.mlp" and sites[1].bias_sink == "layers.0.blocks.0.norm2"
    assert len(family.sites(model, "attn")) == sum(DEPTHS)
    assert family.head_prefixes(model) == ("head.fc",)


# 256 px leaves stage maps of 64/32/16/8 tokens, not whole 7x7 windows: the blocks pad.
@pytest.mark.parametrize("kwargs", [{}, {"img_size": 256}, {"img_size": 256, "qkv_bias": False}])
@pytest.mark.parametrize("placement", ["attn", "block"])
def test_merge_is_exact_and_vanilla(kwargs, placement, tmp_path):
    model = ra.perturb_adapters(ra.inject(swin(**kwargs), ra.RepAdapterConfig(placement=placement)), seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, *model.patch_embed.img_size)
    merged = ra.merge(model)
    vanilla = timm.create_model("swin_tiny_patch4_window7_224", depths=DEPTHS, num_classes=7, **kwargs).eval()
    vanilla.load_state_dict(merged.state_dict(), strict=True)
    with torch.no_grad():
        assert (vanilla(x) - model(x)).abs().max() <= 1e-5
    restored = ra.unmerge(merged, ra.save_adapter(model, tmp_path / "a.safetensors")).state_dict()
    worst = max(((restored[k] - v).norm() / v.norm()).item() for k, v in before.items() if v.norm() > 0)
    assert worst <= 1e-6


def test_qkv_without_bias_gets_bias_free_attention_adapters():
    with pytest.warns(UserWarning, match="built bias-free"):
        model = ra.inject(swin(qkv_bias=False))
    assert model.layers[0].blocks[0].attn.repadapter.down.bias is None
    assert model.layers[0].blocks[0].mlp.repadapter.down.bias is not None


def test_only_adapters_and_head_train():
    model = ra.inject(swin())
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        n for n in dict(model.named_parameters()) if ".repadapter." in n or n.startswith("head.fc.")
    }
