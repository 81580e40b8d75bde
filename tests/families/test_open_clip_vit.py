"""open_clip image towers: the adapter feeds query, key and value and folds into the fused in_proj."""

import pytest
import torch

import repadapter as ra
from repadapter.benchmarks.support import _open_clip
from repadapter.families import family_of

pytest.importorskip("open_clip")


def test_sites_fold_into_the_fused_in_projection():
    model = _open_clip((32, 32))
    sites = family_of(model).sites(model, "block")
    assert [s.host for s in sites[:2]] == ["transformer.resblocks.0.attn", "transformer.resblocks.0.mlp.c_fc"]
    weight = model.transformer.resblocks[0].attn.in_proj_weight.clone()
    merged = ra.merge(ra.perturb_adapters(ra.inject(model)))
    assert not torch.equal(merged.transformer.resblocks[0].attn.in_proj_weight, weight)
    assert family_of(model).head_prefixes(model) == ()


def test_the_full_clip_model_is_refused_with_the_tower_named():
    open_clip = pytest.importorskip("open_clip")
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    with pytest.raises(ra.RepAdapterError, match="open_clip image towers"):
        ra.inject(model)
