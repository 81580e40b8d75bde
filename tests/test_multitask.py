"""Several named adapters on one model, and task switches on a merged model."""

import pytest
import torch

import repadapter as ra
from repadapter.multitask import (
    active_adapter,
    adapter_names,
    add_adapter,
    delete_adapter,
    set_active_adapter,
    switch_adapter,
)
from repadapter_lab.benchmarks.switch import measure_switch
from tests.conftest import build_vit, input_for


def small(num_classes=5):
    """The same random backbone every time (timm's head init draws from the RNG before parts of the
    backbone's, so the backbone is built at 5 classes and the head resized after)."""
    model = build_vit("vit_tiny", depth=2, img_size=32, num_classes=5)
    if num_classes != 5:
        model.reset_classifier(num_classes)
    return model


def test_named_adapters_keep_their_own_config_and_head():
    model = ra.perturb_adapters(ra.inject(small()), seed=1).eval()
    x = input_for(model)
    with torch.no_grad():
        first = model(x)
    add_adapter(model, "pets", ra.RepAdapterConfig(placement="attn", scale=0.5), num_classes=3)
    assert active_adapter(model) == "pets" and adapter_names(model) == ["pets", "default"]
    assert ra.count_parameters(model).adapter == 2 * 2504  # attn placement: 2 sites of width 192
    assert model.head.out_features == 3
    ra.perturb_adapters(model, seed=2)
    with torch.no_grad():
        second = model(x)
    set_active_adapter(model, "default")
    with torch.no_grad():
        assert torch.equal(model(x), first) and model.num_classes == 5
    set_active_adapter(model, "pets")
    with torch.no_grad():
        assert torch.equal(model(x), second)
    assert ra.adapter_config(model).placement == "attn"


def test_a_new_adapter_gets_a_fresh_head_and_only_it_trains():
    model = ra.inject(small())
    with torch.no_grad():
        model.head.weight.fill_(3.0)
    add_adapter(model, "b")
    assert not torch.equal(model.head.weight, torch.full_like(model.head.weight, 3.0))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        n for n in dict(model.named_parameters()) if ".repadapter." in n or n.startswith("head.")
    }


def test_delete_and_name_errors():
    model = ra.inject(small())
    add_adapter(model, "b")
    with pytest.raises(ra.RepAdapterError, match="'b' is the live adapter"):
        delete_adapter(model, "b")
    with pytest.raises(ra.RepAdapterError, match="already has an adapter named 'default'"):
        add_adapter(model, "default")
    delete_adapter(model, "default")
    assert adapter_names(model) == ["b"]
    with pytest.raises(ra.RepAdapterError, match="no adapter named 'default'"):
        set_active_adapter(model, "default")


def task_file(path, seed, num_classes):
    model = ra.perturb_adapters(ra.inject(small(num_classes)), seed=seed)
    return ra.save_adapter(model, path)


def test_a_merged_model_switches_task_without_reloading(tmp_path):
    first, second = task_file(tmp_path / "a.safetensors", 1, 5), task_file(tmp_path / "b.safetensors", 2, 3)
    deployed = ra.merge(ra.load_adapter(small(5).eval(), first))
    qkv = deployed.blocks[0].attn.qkv
    switch_adapter(deployed, first, second)
    assert deployed.blocks[0].attn.qkv is qkv and not ra.has_adapters(deployed)
    reference = ra.load_adapter(small(3).eval(), second)
    x = input_for(deployed)
    with torch.no_grad():
        assert deployed(x).shape == (2, 3)
        assert (deployed(x) - reference(x)).abs().max() <= 1e-5
    switch_adapter(deployed, second, first)
    with torch.no_grad():
        assert (deployed(x) - ra.load_adapter(small(5).eval(), first)(x)).abs().max() <= 1e-5


def test_switch_benchmark_reports_time_and_exactness():
    result = measure_switch("vit_tiny_patch16_224", rounds=2)
    assert len(result["switch_seconds"]) == 2 and result["median_seconds"] > 0
    assert result["max_abs_logit_diff_after_switching"] <= 1e-5
    assert result["max_rel_backbone_drift_after_switching"] <= 1e-6
