"""Every method under one interface: what it trains, how it starts, and how it deploys."""

import pytest
import timm
import torch

from repadapter import RepAdapterError
from repadapter.training.methods import METHODS, deploy, method, perturb_trained
from tests.fixtures import tiny_recipe

# What each method trains besides the head (by parameter name).
TRAINS = {
    "repadapter": lambda n: ".repadapter." in n,
    "linear": lambda n: False,
    "full": lambda n: True,
    "bitfit": lambda n: n.endswith(".bias"),
    "lora": lambda n: ".lora_" in n,
    "ssf": lambda n: ".ssf_" in n,
    "fact-tt": lambda n: n.startswith("fact_tt.") or n.endswith(".cores"),
    "adapter": lambda n: ".adapter." in n,
    "adaptformer": lambda n: ".adapter." in n,
    "vpt-deep": lambda n: n.endswith(".prompts"),
}
# Methods whose fresh model computes exactly what the base model does.
STARTS_AS_BASE = {"repadapter", "linear", "full", "bitfit", "lora", "fact-tt", "adapter", "adaptformer"}


def vit(seed: int = 0, **extra):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=5, **extra).eval()


def swin():
    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        img_size=56,
        depths=(1, 1),
        num_heads=(2, 4),
        embed_dim=32,
        num_classes=5,
    ).eval()


def convnext():
    torch.manual_seed(0)
    return timm.create_model("convnext_tiny", depths=(1, 1, 1, 1), num_classes=5).eval()


def prepared(name: str, model, scale: float = 1.0):
    return method(name).prepare(model, tiny_recipe(method=name, dim=4, dropout=0.0), scale).eval()


def test_every_method_is_covered_here():
    assert set(TRAINS) == set(METHODS)


@pytest.mark.parametrize("name", list(METHODS))
def test_method_trains_its_own_parameters_and_the_head(name):
    model = prepared(name, vit())
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters() if n.startswith("head.") or TRAINS[name](n)}
    assert trained == expected and trained
    x = torch.randn(2, 3, 32, 32)
    model.train()
    model(x).square().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        same = torch.equal(model.eval()(x), vit().eval()(x))
    assert same == (name in STARTS_AS_BASE)


# FacT-TT shares one width across the model, so Swin's stages are refused (tested below).
MERGE_CASES = [
    (name, build)
    for name in METHODS
    if METHODS[name].mergeable
    for build in (vit, swin)
    if (name, build) != ("fact-tt", swin)
] + [("ssf", convnext)]  # Linear MLPs and channels-last norms; the NCHW head norm is left alone


@pytest.mark.parametrize("name, build", MERGE_CASES, ids=[f"{n}-{b.__name__}" for n, b in MERGE_CASES])
def test_mergeable_methods_deploy_as_the_vanilla_model(name, build):
    trained = perturb_trained(prepared(name, build(), scale=0.7))
    deployed = deploy(trained, name)
    vanilla = build()
    vanilla.load_state_dict(deployed.state_dict(), strict=True)
    size = getattr(getattr(vanilla, "patch_embed", None), "img_size", (64, 64))
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = trained(x)
        assert (vanilla(x) - out).abs().max() <= 1e-5 * max(1.0, out.abs().max().item())
        assert not torch.allclose(vanilla(x), build()(x))  # the trained update is in there
    assert sum(p.numel() for p in deployed.parameters()) == sum(p.numel() for p in build().parameters())


@pytest.mark.parametrize("name", [m for m in METHODS if not METHODS[m].mergeable])
def test_non_mergeable_methods_say_so_when_asked_to_deploy(name):
    trained = prepared(name, vit())
    with pytest.raises(RepAdapterError, match=f"{name} .* does not fold into the base model.*lora"):
        deploy(trained, name)


def test_lora_and_fact_tt_updates_have_the_documented_form():
    lora = perturb_trained(prepared("lora", vit(), scale=0.5))
    layer = lora.blocks[0].attn.qkv
    delta = deploy(lora, "lora").blocks[0].attn.qkv.weight - layer.base.weight
    expected = 0.5 * layer.lora_up.weight @ layer.lora_down.weight
    assert (
        torch.allclose(delta, expected, atol=1e-6)
        and torch.linalg.matrix_rank(delta.double(), atol=1e-5) == 4
    )

    fact = perturb_trained(prepared("fact-tt", vit(), scale=2.0))
    fc2 = fact.blocks[1].mlp.fc2  # (192, 768): one row of four 192 x 192 slices
    assert fc2.cores.shape == (1, 4, 4, 4) and fact.blocks[0].attn.qkv.cores.shape == (3, 1, 4, 4)
    delta = deploy(fact, "fact-tt").blocks[1].mlp.fc2.weight - fc2.base.weight
    u, v = fact.fact_tt.u, fact.fact_tt.v
    assert torch.allclose(delta[:, 192:384], 2.0 * v @ fc2.cores[0, 1] @ u.T, atol=1e-6)


def test_methods_refuse_models_they_cannot_handle():
    with pytest.raises(RepAdapterError, match="--method lora wraps Linear layers named attn.qkv.*ResNet"):
        prepared("lora", timm.create_model("resnet18", num_classes=3))
    with pytest.raises(RepAdapterError, match="vpt-deep prompts timm VisionTransformer.*SwinTransformer"):
        prepared("vpt-deep", swin())
    with pytest.raises(RepAdapterError, match="fact-tt shares its factors across blocks of one width"):
        prepared("fact-tt", swin())
    with pytest.raises(RepAdapterError, match="fact-tt factorises the attention.*ConvNeXt has no attn.qkv"):
        prepared("fact-tt", convnext())
    with pytest.raises(RepAdapterError, match="unknown method 'prompt'; methods: repadapter, linear"):
        method("prompt")


def test_vpt_deep_keeps_the_token_count_and_costs_attention():
    model = prepared("vpt-deep", vit())
    x = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(x)
    assert tokens.shape == vit().forward_features(x).shape  # prompts are dropped after each block
    assert model.blocks[0].prompts.shape == (4, 192)


def wrapped(name, model):
    """The modules ``name`` replaced in ``model``, by module path."""
    before = {n: type(m) for n, m in model.named_modules()}
    after = prepared(name, model).named_modules()
    return sorted(n for n, m in after if n in before and type(m) is not before[n])


def test_baselines_wrap_the_layers_the_family_places_adapters_on():
    # the family's attention sites (blocks.i.attn) and MLP sites (blocks.i.mlp) name the layers
    assert wrapped("lora", vit()) == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    assert wrapped("adapter", vit()) == [f"blocks.{i}.{n}" for i in (0, 1) for n in ("attn.proj", "mlp.fc2")]
    assert wrapped("adaptformer", swin()) == ["layers.0.blocks.0.mlp", "layers.1.blocks.0.mlp"]
    assert wrapped("vpt-deep", vit()) == ["blocks.0", "blocks.1"]
    # SSF: every Linear of attention and MLP, every channels-last LayerNorm outside the head
    ssf = wrapped("ssf", swin())
    assert {"patch_embed.norm", "layers.1.downsample.norm", "norm"} <= set(ssf)
    assert "layers.1.downsample.reduction" not in ssf and len(ssf) == 3 + 2 * 6
    assert wrapped("ssf", convnext()) == [
        f"stages.{i}.blocks.0.{n}" for i in range(4) for n in ("mlp.fc1", "mlp.fc2", "norm")
    ]


def test_a_model_of_no_family_trains_the_head_timm_records():
    torch.manual_seed(0)
    mixer = timm.create_model("mixer_s16_224", img_size=32, num_classes=3)
    trained = {n for n, p in prepared("linear", mixer).named_parameters() if p.requires_grad}
    assert trained == {"head.weight", "head.bias"}
