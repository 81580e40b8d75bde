"""timm ConvNeXt: sites per placement, producer-side folds, and the paper's unmergeable placement."""

import pytest
import timm
import torch

import repadapter as ra
from repadapter.families import family_of
from repadapter_lab.benchmarks.support import TINY_CONVNEXT, nudge


def convnext(**kwargs):
    torch.manual_seed(0)
    return nudge(timm.create_model("convnext_atto", num_classes=5, **TINY_CONVNEXT, **kwargs))


@pytest.mark.parametrize("conv_mlp", [False, True])
def test_sites(conv_mlp):
    model = convnext(conv_mlp=conv_mlp)
    family = family_of(model)
    block, io = family.sites(model, "block"), family.sites(model, "io")
    assert family.name == "timm_convnext" and len(block) == 4 and len(io) == 8
    assert block[0].host == "stages.0.blocks.0.mlp" and block[0].consumers == ("fc1",)
    assert block[0].channels_first is conv_mlp
    assert io[1].host == "stages.0.blocks.0.mlp.fc2" and io[1].output
    assert family.head_prefixes(model) == ("head.fc",)


def test_paper_placement_trains_but_refuses_to_merge(tmp_path):
    model = ra.perturb_adapters(ra.inject(convnext(), ra.RepAdapterConfig(placement="dwconv")))
    assert model.stages[0].blocks[0].conv_dw.repadapter.channels_first
    with pytest.raises(ra.RepAdapterError, match="placement 'dwconv'.*depthwise.*placement='block'"):
        ra.merge(model)
    with pytest.raises(ra.RepAdapterError, match="placement 'dwconv'"):
        ra.unmerge(convnext(), ra.save_adapter(model, tmp_path / "a.safetensors"))


def test_transformer_placements_are_refused_by_name():
    with pytest.raises(ra.RepAdapterError, match="placement='attn' does not exist for timm_convnext"):
        ra.inject(convnext(), ra.RepAdapterConfig(placement="attn"))
