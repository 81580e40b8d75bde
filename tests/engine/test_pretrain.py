import json

import numpy as np
import timm
import torch

from repadapter.engine import pretrain as pretrain_module
from repadapter.engine.pretrain import PretrainConfig, _augment, pretrain


def test_augmentation_is_seeded_and_stays_in_range():
    gray = torch.rand(6, 1, 32, 32)
    a = _augment(gray, 0.5, torch.Generator().manual_seed(1))
    b = _augment(gray, 0.5, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    plain = _augment(gray, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(plain[:, 0], plain[:, 1])  # untinted: grey in all three channels


def test_pretrain_writes_loadable_weights_and_a_manifest(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)

    def fake(split):
        n = 32 if split == "train" else 16
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)

    monkeypatch.setattr(pretrain_module, "fashion_mnist", fake)
    out = tmp_path / "vit.fmnist"
    manifest = pretrain(PretrainConfig(epochs=1, batch_size=8, warmup_steps=1), out, progress=False)
    assert manifest["steps"] == 4 and manifest["epochs"] == 1 and 0 <= manifest["source_test_accuracy"] <= 1
    saved = json.loads((tmp_path / "vit.fmnist.json").read_text())
    assert (
        saved["weights_sha256"] == manifest["weights_sha256"]
        and saved["weights_file"] == "vit.fmnist.safetensors"
    )
    model = timm.create_model(
        "vit_tiny6_patch4_32",
        pretrained=True,
        num_classes=3,
        pretrained_cfg_overlay={"file": str(tmp_path / "vit.fmnist.safetensors")},
    )
    assert model.head.out_features == 3 and manifest["parameters"] == 2_693_578
