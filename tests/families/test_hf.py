"""Hugging Face ViT, DINOv2 and CLIP vision: one adapter for separate q, k, v projections."""

import pytest

import repadapter as ra
from repadapter.families import SiteSpec, family_of
from repadapter_lab.benchmarks.support import _hf

pytest.importorskip("transformers")


@pytest.mark.parametrize(
    "kind, family, attention, mlp",
    [
        ("vit", "hf_vit", "vit.layers.0.attention", "vit.layers.0.mlp"),
        ("dinov2", "hf_vit", "encoder.layer.0.attention", "encoder.layer.0.mlp"),
        ("clip", "hf_clip", "encoder.layers.0.self_attn", "encoder.layers.0.mlp"),
    ],
)
def test_sites_and_heads(kind, family, attention, mlp):
    model = _hf(kind, (32, 32))
    found = family_of(model)
    sites = found.sites(model, "block")
    assert found.name == family and len(sites) == 4
    assert sites[0].host == attention and sites[0].consumers == ("q_proj", "k_proj", "v_proj")
    assert sites[1].host == mlp and sites[1].consumers == ("fc1",)
    assert found.head_prefixes(model) == (("classifier",) if kind == "vit" else ())


def test_swiglu_mlp_feeds_both_projections():
    model = _hf("dinov2", (32, 32), use_swiglu_ffn=True)
    assert family_of(model).sites(model, "block")[1] == SiteSpec(
        "encoder.layer.0.mlp", ("gate_proj", "up_proj"), "encoder.layer.0.norm2"
    )


def test_only_adapters_and_classifier_train():
    model = ra.inject(_hf("vit", (32, 32)))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        n for n, _ in model.named_parameters() if ".repadapter." in n or n.startswith("classifier.")
    }


@pytest.mark.parametrize("kind", ["vit", "dinov2", "clip"])
def test_a_model_saved_and_loaded_with_from_pretrained_merges_to_its_vanilla_class(kind, tmp_path):
    """The user's path: <Class>.from_pretrained(<local folder or hub id>), adapt, merge, reload."""
    import torch

    from repadapter_lab.benchmarks.support import _hf_forward

    _hf(kind, (32, 32)).save_pretrained(tmp_path / "base")
    cls = type(_hf(kind, (32, 32)))
    adapted = ra.perturb_adapters(ra.inject(cls.from_pretrained(tmp_path / "base")), seed=4).eval()
    folder = ra.save_pretrained(adapted, tmp_path / "adapter")
    merged = ra.merge(ra.from_pretrained(folder, model=cls.from_pretrained(tmp_path / "base")))
    vanilla = cls.from_pretrained(tmp_path / "base").eval()
    vanilla.load_state_dict(merged.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (_hf_forward(vanilla, x) - _hf_forward(adapted, x)).abs().max() <= 1e-5
