"""merge -> unmerge (and unload) on real timm architectures, with random non-zero adapters."""

import copy
import pickle

import pytest
import timm
import torch
from timm.utils import reparameterize_model
from torch import nn

import repadapter as ra
from repadapter.tuner.merge import unload
from tests.conftest import VIT_MODELS, build_vit, input_for, relative_error, vanilla_like

TOL = 1e-5


def adapted(key: str, seed: int = 1, **config) -> nn.Module:
    model = ra.inject(build_vit(key), ra.RepAdapterConfig(**config))
    return ra.perturb_adapters(model, std=0.05, seed=seed).eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("placement", ["attn", "block"])
@pytest.mark.parametrize("key", list(VIT_MODELS))
def test_merged_model_is_vanilla_and_exact(key, placement):
    base = build_vit(key)
    x = input_for(base)
    with torch.no_grad():
        base_out = base(x)
    model = adapted(key, placement=placement)
    merged = ra.merge(model)
    vanilla = vanilla_like(key)
    vanilla.load_state_dict(merged.state_dict(), strict=True)
    with torch.no_grad():
        unmerged_out, merged_out, vanilla_out = model(x), merged(x), vanilla(x)
    assert max_diff(unmerged_out, base_out) > 1e-3  # the adapters do change the function
    assert max_diff(merged_out, unmerged_out) <= TOL
    assert max_diff(vanilla_out, unmerged_out) <= TOL
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in vanilla.parameters())
    assert [type(m) for m in merged.modules()] == [type(m) for m in vanilla.modules()]


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("groups", [1, 2, 4, 8])
@pytest.mark.parametrize("placement", ["attn", "block"])
def test_merge_is_exact_for_every_group_count_and_scale(placement, groups, scale):
    model = adapted("vit_small_no_qkv_bias", placement=placement, groups=groups, scale=scale)
    model.blocks = model.blocks[:3]
    x = input_for(model, batch=1)
    with torch.no_grad():
        assert max_diff(ra.merge(model)(x), model(x)) <= TOL


@pytest.mark.parametrize("size", [(224, 224), (160, 160), (96, 128), (100, 130), (32, 48)])
def test_merge_is_exact_at_every_input_size(size):
    model = ra.perturb_adapters(
        ra.inject(build_vit("vit_tiny", dynamic_img_size=True, dynamic_img_pad=True)), seed=2
    ).eval()
    merged = ra.merge(model)
    x = input_for(model, size=size)
    with torch.no_grad():
        assert max_diff(merged(x), model(x)) <= TOL


@pytest.mark.parametrize(
    "key", ["vit_tiny", "vit_small_no_qkv_bias", "deit3_small_layerscale", "vit_res_post_norm", "swiglu_mlp"]
)
def test_unmerge_restores_the_base_weights(key, tmp_path):
    model = adapted(key)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = ra.save_adapter(model, tmp_path / "a.safetensors")
    merged = ra.merge(model)
    restored = ra.unmerge(merged, path)
    after = restored.state_dict()
    assert after.keys() == before.keys()
    worst = max(relative_error(after[k], before[k]) for k in before)
    assert worst <= 1e-6
    x = input_for(model)
    with torch.no_grad():
        assert max_diff(restored(x), model(x)) <= TOL
    assert ra.adapter_config(restored) == ra.adapter_config(model)


@pytest.mark.parametrize("key", ["vit_tiny", "vit_small_no_qkv_bias"])
def test_timm_reparameterize_model_deploys_an_injected_model(key):
    model = adapted(key)
    deployed = reparameterize_model(model)
    vanilla = vanilla_like(key)
    vanilla.load_state_dict(deployed.state_dict(), strict=True)
    x = input_for(model)
    with torch.no_grad():
        assert max_diff(deployed(x), model(x)) <= TOL


def test_merge_keeps_the_dtype_and_casts_once():
    model = adapted("vit_tiny").to(torch.bfloat16)
    merged = ra.merge(model)
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    x = input_for(model).to(torch.bfloat16)
    with torch.no_grad():
        assert max_diff(merged(x).float(), model(x).float()) < 0.1


def test_misuse_gets_clear_errors(tmp_path):
    model = adapted("vit_tiny")
    with pytest.raises(ra.RepAdapterError, match="already has RepAdapters"):
        ra.inject(model)
    merged = ra.merge(model)
    with pytest.raises(ra.RepAdapterError, match="already merged.*unmerge"):
        ra.merge(merged)
    with pytest.raises(ra.RepAdapterError, match="has no RepAdapters; call repadapter.inject"):
        ra.merge(build_vit("vit_tiny"))
    with pytest.raises(ra.RepAdapterError, match="has no RepAdapters"):
        ra.save_adapter(build_vit("vit_tiny"), tmp_path / "x.safetensors")
    path = ra.save_adapter(model, tmp_path / "a.safetensors")
    with pytest.raises(ra.RepAdapterError, match="still has RepAdapters"):
        ra.unmerge(model, path)


def test_merge_of_a_model_whose_submodules_were_injected_merges_each_of_them(tmp_path):
    """``inject(clip.visual)`` then ``merge(clip)``, on two timm ViTs in one container."""
    pair = nn.ModuleDict()
    for key, seed in (("a", 1), ("b", 2)):
        tower = ra.inject(build_vit("vit_tiny", seed=seed, depth=2, img_size=32))
        pair[key] = ra.perturb_adapters(tower, seed=seed)
    x = input_for(pair["a"])
    merged = ra.merge(pair)
    assert not ra.has_adapters(merged) and ra.has_adapters(pair)  # a merged copy
    with torch.no_grad():
        assert max(max_diff(merged[k](x), pair[k](x)) for k in pair) <= TOL
    with pytest.raises(ra.RepAdapterError, match="injected into its submodule 'a'.*call this on model.a"):
        ra.save_adapter(pair, tmp_path / "x.safetensors")

    convnext = timm.create_model("convnext_atto", depths=(1, 1, 1, 1), num_classes=3)
    pair["b"] = ra.inject(convnext, ra.RepAdapterConfig(placement="dwconv"))
    with pytest.raises(ra.RepAdapterError, match="cannot merge the adapter at stages.0"):
        ra.merge(pair, inplace=True)
    assert ra.has_adapters(pair["a"])  # refused before anything was folded


def test_unmerge_refuses_a_model_that_was_not_merged_from_the_file(tmp_path):
    model = adapted("vit_tiny")
    path = ra.save_adapter(model, tmp_path / "a.safetensors")
    other = build_vit("vit_tiny", seed=5)  # another head: not the merged model of this file
    with pytest.raises(ra.RepAdapterError, match="was not merged from that adapter file"):
        ra.unmerge(other, path)


def test_merge_and_unmerge_leave_their_input_alone_unless_inplace(tmp_path):
    model = adapted("vit_tiny")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    merged = ra.merge(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    path = ra.save_adapter(model, tmp_path / "a.safetensors")
    merged_state = {k: v.clone() for k, v in merged.state_dict().items()}
    ra.unmerge(merged, path)
    assert all(torch.equal(v, merged_state[k]) for k, v in merged.state_dict().items())
    assert ra.merge(model, inplace=True) is model
    assert not any(".repadapter." in k for k in model.state_dict())


def test_injected_models_deepcopy_and_pickle():
    model = adapted("vit_small_no_qkv_bias")
    x = input_for(model)
    with torch.no_grad():
        expected = model(x)
        for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert torch.equal(clone(x), expected)
            merged = ra.merge(clone)  # bias sinks still point at the clone's own norms
            assert max_diff(merged(x), expected) <= TOL


def test_a_trained_model_pickles_and_merge_or_unload_leave_no_hook_behind():
    """Adapters after a norm watch that norm's forward (to recompute their input in backward);
    nothing of a training step stays on the model, and the watch goes with the adapters."""
    model = adapted("vit_small_no_qkv_bias").train()
    model(input_for(model)).pow(2).mean().backward()
    assert model.blocks[0].norm1._forward_hooks
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model)), model):
        assert clone.blocks[0].norm1._forward_hooks
        bare = unload(clone) if clone is model else ra.merge(clone)
        assert not any(module._forward_hooks for module in bare.modules())
