import pytest
import timm
from torch import nn

from repadapter import RepAdapterError
from repadapter.families import SiteSpec, family_of
from tests.conftest import build_vit


def sites(key: str, placement: str) -> list[SiteSpec]:
    model = build_vit(key)
    return family_of(model).sites(model, placement)


@pytest.mark.parametrize("placement, per_block", [("attn", 1), ("block", 2)])
def test_placements_put_one_adapter_before_mha_and_one_before_ffn(placement, per_block):
    found = sites("vit_tiny", placement)
    assert len(found) == 12 * per_block
    assert found[0] == SiteSpec("blocks.0.attn", ("qkv",), "blocks.0.norm1")
    if placement == "block":
        assert found[1] == SiteSpec("blocks.0.mlp", ("fc1",), "blocks.0.norm2")


def test_shared_inputs_get_one_adapter_for_every_consumer():
    assert sites("swiglu_mlp", "block")[1].consumers == ("fc1_g", "fc1_x")


def test_post_norm_blocks_have_no_bias_sink():
    assert all(site.bias_sink is None for site in sites("vit_res_post_norm", "block"))


def test_distilled_models_train_both_heads():
    model = build_vit("deit_tiny_distilled")
    assert family_of(model).head_prefixes(model) == ("head", "head_dist")


def test_unsupported_blocks_and_models_are_named():
    model = timm.create_model("vit_small_patch16_18x2_224", depth=1)
    with pytest.raises(
        RepAdapterError, match="ParallelThingsBlock.*supports ViT blocks of type Block, ResPostBlock"
    ):
        family_of(model).sites(model, "block")
    with pytest.raises(
        RepAdapterError, match="not support models of type .*Sequential. Supported: .*timm_swin: .*timm_vit: "
    ):
        family_of(nn.Sequential(nn.Linear(2, 2)))
