"""target_modules: adapters on named layers of any model, each folded into its layer."""

import pytest
import torch
from torch import nn

import repadapter as ra
from repadapter_lab.benchmarks.support import _mixed_net
from tests.conftest import build_vit


def test_named_linear_layers_of_a_known_family_keep_its_head():
    model = ra.inject(
        build_vit("vit_tiny", depth=2), ra.RepAdapterConfig(target_modules=("qkv", r"blocks\.1\.mlp\.fc1"))
    )
    assert [n for n, m in model.named_modules() if hasattr(m, "repadapter")] == [
        "blocks.0.attn.qkv", "blocks.1.attn.qkv", "blocks.1.mlp.fc1",
    ]  # fmt: skip
    assert model.head.weight.requires_grad
    x = torch.randn(1, 3, 224, 224)
    ra.perturb_adapters(model)
    with torch.no_grad():
        assert (ra.merge(model)(x) - model(x)).abs().max() <= 1e-5


def test_layers_an_adapter_cannot_fold_into_are_refused():
    net = _mixed_net((32, 32))
    with pytest.raises(ra.RepAdapterError, match=r"matched 1, but an adapter cannot fold into a ReLU"):
        ra.inject(net, ra.RepAdapterConfig(target_modules=("1",)))
    with pytest.raises(ra.RepAdapterError, match="matches no module"):
        ra.inject(net, ra.RepAdapterConfig(target_modules=("nothing",)))
    depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8))
    with pytest.raises(ra.RepAdapterError, match="depthwise"):
        ra.inject(depthwise, ra.RepAdapterConfig(target_modules=("0",)))
    attn = nn.Sequential(nn.MultiheadAttention(8, 2))
    with pytest.raises(ra.RepAdapterError, match="NonDynamicallyQuantizableLinear"):
        ra.inject(attn, ra.RepAdapterConfig(target_modules=("out_proj",)))


def test_unknown_models_need_target_modules():
    with pytest.raises(ra.RepAdapterError, match="does not support models of type"):
        ra.inject(_mixed_net((32, 32)))
