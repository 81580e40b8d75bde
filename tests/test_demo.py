import torch

from repadapter.demo import DemoSettings, gratings, run_demo


def test_gratings_are_deterministic_and_cover_every_class():
    a, labels = gratings(64, 4, 16, seed=3)
    b, _ = gratings(64, 4, 16, seed=3)
    assert torch.equal(a, b) and a.shape == (64, 3, 16, 16)
    assert set(labels.tolist()) == {0, 1, 2, 3}
    assert not torch.equal(a, gratings(64, 4, 16, seed=4)[0])


def test_demo_learns_merges_exactly_and_keeps_the_size():
    lines = []
    settings = DemoSettings(steps=25, train_images=128, test_images=64, latency_rounds=2)
    result = run_demo(settings, log=lines.append)
    assert result["test_accuracy"] >= 0.6  # chance is 0.25
    assert result["merged_test_accuracy"] == result["test_accuracy"]
    assert result["max_abs_logit_diff"] <= 1e-5
    assert result["reload_max_abs_logit_diff"] == 0
    params = result["parameters"]
    assert params["merged"] == params["base"] < params["with_adapters"]
    assert set(result["latency_batch1"]) == {"base", "merged", "unmerged"}
    assert any("merged vs unmerged" in line for line in lines)
