"""Hugging Face VideoMAE: one adapter before query/key/value (key has no bias: its shift goes
into the norm) and one before fc1; merged == unmerged on clips; the merge is the vanilla class."""

import pytest
import torch

import repadapter as ra
from repadapter.families import family_of
from repadapter_lab.benchmarks.support import nudge

transformers = pytest.importorskip("transformers")

FRAMES, SIZE = 4, 16


def _videomae(classify: bool = True, **extra):
    config = transformers.VideoMAEConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=SIZE,
        patch_size=4,
        num_frames=FRAMES,
        tubelet_size=2,
        num_labels=5,
        **extra,
    )
    torch.manual_seed(0)
    cls = transformers.VideoMAEForVideoClassification if classify else transformers.VideoMAEModel
    return nudge(cls(config))


def _clips(n: int = 2) -> torch.Tensor:
    return torch.randn(n, FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _out(model, x):
    out = model(pixel_values=x)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def test_sites_sink_the_shift_into_the_norm_before_the_bias_free_key():
    model = _videomae()
    family = family_of(model)
    sites = family.sites(model, "block")
    assert family.name == "hf_videomae" and len(sites) == 4
    first = "videomae.encoder.layer.0"
    assert sites[0].host == f"{first}.attention"
    assert sites[0].consumers == ("attention.query", "attention.key", "attention.value")
    assert sites[0].bias_sink == f"{first}.layernorm_before"
    assert (sites[1].host, sites[1].consumers, sites[1].bias_sink) == (
        f"{first}.intermediate",
        ("dense",),
        f"{first}.layernorm_after",
    )
    assert [s.host for s in family.sites(model, "attn")] == [sites[0].host, sites[2].host]
    assert family.head_prefixes(model) == ("classifier",)
    assert family.head_prefixes(_videomae(classify=False)) == ()


@pytest.mark.parametrize("placement", ["attn", "block"])
@pytest.mark.parametrize("qv_bias", [True, False])
def test_merged_equals_unmerged_on_clips_and_is_the_vanilla_class(placement, qv_bias):
    model = ra.inject(_videomae(qv_bias=qv_bias), ra.RepAdapterConfig(dim=2, groups=2, placement=placement))
    adapted = ra.perturb_adapters(model, std=0.2, seed=3).eval()
    # the attention adapter keeps its biases (the shift sinks into the norm), and it changes the function
    assert adapted.videomae.encoder.layer[0].attention.repadapter.up.bias is not None
    x = _clips()
    merged = ra.merge(adapted)
    vanilla = _videomae(qv_bias=qv_bias).eval()
    with torch.no_grad():
        before, after, base = _out(adapted, x), _out(merged, x), _out(vanilla, x)
    assert (before - base).abs().max() > 1e-3
    assert (after - before).abs().max() <= 1e-5 * max(1.0, before.abs().max().item())
    assert type(merged) is type(vanilla) and not ra.has_adapters(merged)
    vanilla.load_state_dict(merged.state_dict(), strict=True)
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in vanilla.parameters())
    with torch.no_grad():
        assert (_out(vanilla, x) - before).abs().max() <= 1e-5 * max(1.0, before.abs().max().item())


def test_only_adapters_and_classifier_train_fc_norm_stays_frozen():
    model = ra.inject(_videomae(), ra.RepAdapterConfig(dim=2, groups=2))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        n for n, _ in model.named_parameters() if ".repadapter." in n or n.startswith("classifier.")
    }
    assert not model.fc_norm.weight.requires_grad


def test_save_pretrained_folder_adapt_save_reload_merge(tmp_path):
    """The user's path: from_pretrained(<folder>), adapt, save the adapter, reload it, merge."""
    cls = transformers.VideoMAEForVideoClassification
    _videomae().save_pretrained(tmp_path / "base")
    adapted = ra.inject(cls.from_pretrained(tmp_path / "base"), ra.RepAdapterConfig(dim=2, groups=2))
    adapted = ra.perturb_adapters(adapted, seed=4).eval()
    file = ra.save_adapter(adapted, tmp_path / "clips.safetensors")
    reloaded = ra.load_adapter(cls.from_pretrained(tmp_path / "base"), file).eval()
    merged = ra.merge(reloaded)
    vanilla = cls.from_pretrained(tmp_path / "base").eval()
    vanilla.load_state_dict(merged.state_dict(), strict=True)
    x = _clips()
    with torch.no_grad():
        assert (_out(reloaded, x) - _out(adapted, x)).abs().max() == 0
        assert (_out(vanilla, x) - _out(adapted, x)).abs().max() <= 1e-5
    with pytest.raises(ra.RepAdapterError, match="hf_videomae"):
        tiny = transformers.ViTConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16
        )
        ra.load_adapter(transformers.ViTForImageClassification(tiny), file)
