"""inject on real timm architectures: which parameters train, adapter modes and bias-free sites."""

import pytest
import torch
from torch import nn

import repadapter as ra
from tests.conftest import build_vit


def test_new_adapters_follow_the_model_mode():
    assert not ra.inject(build_vit("vit_tiny")).blocks[0].attn.repadapter.training
    assert ra.inject(build_vit("vit_tiny").train()).blocks[0].mlp.repadapter.training


def test_inject_freezes_the_backbone_and_trains_adapters_and_head():
    model = ra.inject(build_vit("vit_tiny"))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        n for n in dict(model.named_parameters()) if ".repadapter." in n or n.startswith("head.")
    }
    count = ra.count_parameters(model)
    assert count.trainable == count.adapter + 192 * 10 + 10
    assert count.adapter == 24 * ((192 * 8 + 8) + (192 * 4 + 192))  # down + grouped up


def test_train_head_off_and_extra_trainable_patterns():
    model = ra.inject(
        build_vit("vit_tiny"), ra.RepAdapterConfig(train_head=False, trainable=(r"norm\d?\.bias",))
    )
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "head.weight" not in trained
    assert "blocks.3.norm1.bias" in trained and "norm.bias" in trained
    assert "blocks.3.norm1.weight" not in trained
    with pytest.raises(ra.RepAdapterError, match="matches no parameter"):
        ra.inject(build_vit("vit_tiny"), ra.RepAdapterConfig(trainable=("no_such",)))
    with pytest.raises(ra.RepAdapterError, match="not a valid regex"):
        ra.inject(build_vit("vit_tiny"), ra.RepAdapterConfig(trainable=("(",)))


def test_training_moves_only_adapters_and_head():
    torch.manual_seed(0)
    model = ra.inject(build_vit("vit_tiny", depth=2, img_size=32, patch_size=8, num_classes=3))
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(24, 3, 32, 32), torch.arange(24) % 3
    model.train()
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert model.blocks[0].attn.repadapter.up.weight.abs().sum() > 0


def test_sites_without_any_bias_home_get_bias_free_adapters_and_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="built bias-free so that merging stays exact"):
        model = ra.inject(build_vit("vit_res_post_norm"))
    assert model.blocks[0].attn.repadapter.down.bias is None
    assert model.blocks[0].mlp.repadapter.down.bias is not None  # fc1 has a bias of its own
    meta = ra.files.read_adapter_file(ra.save_adapter(model, tmp_path / "a.safetensors")).metadata
    assert meta["sites"]["blocks.0.attn"]["bias"] == "none"
