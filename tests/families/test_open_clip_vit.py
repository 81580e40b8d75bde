"""open_clip image towers: the adapter feeds query, key and value and folds into the fused in_proj."""

import pytest
import torch

import repadapter as ra
from repadapter.families import family_of
from repadapter_lab.benchmarks.support import _open_clip

pytest.importorskip("open_clip")


def test_sites_fold_into_the_fused_in_projection():
    model = _open_clip((32, 32))
    sites = family_of(model).sites(model, "block")
    assert [s.host for s in sites[:2]] == ["transformer.resblocks.0.attn", "transformer.resblocks.0.mlp.c_fc"]
    weight = model.transformer.resblocks[0].attn.in_proj_weight.clone()
    merged = ra.merge(ra.perturb_adapters(ra.inject(model)))
    assert not torch.equal(merged.transformer.resblocks[0].attn.in_proj_weight, weight)
    assert family_of(model).head_prefixes(model) == ()


def test_a_checkpoint_loaded_from_a_local_file_adapts_and_merges_to_a_vanilla_tower(tmp_path):
    """The user's path: open_clip.create_model(name, pretrained=<file>), then its .visual."""
    open_clip = pytest.importorskip("open_clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "repadapter-test-tiny.json").write_text(__import__("json").dumps(config))
    open_clip.add_model_config(tmp_path / "configs")
    torch.manual_seed(3)
    torch.save(open_clip.create_model("repadapter-test-tiny").state_dict(), tmp_path / "tiny.pt")

    def load():
        return open_clip.create_model("repadapter-test-tiny", pretrained=str(tmp_path / "tiny.pt")).visual

    tower = ra.perturb_adapters(ra.inject(load()), seed=2).eval()
    merged = ra.merge(tower)
    vanilla = load().eval()
    vanilla.load_state_dict(merged.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (vanilla(x) - tower(x)).abs().max() <= 1e-5
        assert not torch.allclose(vanilla(x), load().eval()(x))  # the adapters did change it
