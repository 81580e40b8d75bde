import json

import numpy as np
import pytest
import timm
import torch

from repadapter.errors import RepAdapterError
from repadapter.families.factory import create
from repadapter_lab import pretrain as pretrain_module
from repadapter_lab.offline.specialized import SCIENCE_IMAGES
from repadapter_lab.pretrain import (
    DISTILL_PHOTOS,
    PretrainConfig,
    _augment,
    _dense_stage,
    _photo,
    _photo_crops,
    pretrain,
)


def test_augmentation_is_seeded_and_stays_in_range():
    gray = torch.rand(6, 1, 32, 32)
    a = _augment(gray, 0.5, torch.Generator().manual_seed(1))
    b = _augment(gray, 0.5, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    plain = _augment(gray, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(plain[:, 0], plain[:, 1])  # untinted: grey in all three channels


def test_distillation_photos_are_not_suite_images_and_crops_are_seeded():
    assert not set(DISTILL_PHOTOS) & set(SCIENCE_IMAGES)
    photos = [_photo(name) for name in DISTILL_PHOTOS[:3]]
    a = _photo_crops(photos, 4, 64, torch.Generator().manual_seed(0))
    assert a.shape == (4, 3, 64, 64) and torch.equal(
        a, _photo_crops(photos, 4, 64, torch.Generator().manual_seed(0))
    )
    assert a.min() >= -1 and a.max() <= 1


def test_dense_target_is_the_deepest_teacher_stage_that_covers_the_student_grid():
    teacher = create("tf_efficientnet_lite0", pretrained=False)
    assert _dense_stage(teacher, 128, 8) == (3, 112)  # stride 16: 8 x 8 at 128 px
    assert _dense_stage(teacher, 64, 8) == (2, 40)  # stride 8
    with pytest.raises(RepAdapterError, match="raise --teacher-size"):
        _dense_stage(teacher, 4, 8)


@pytest.mark.parametrize(("dense_weight", "teacher_dtype"), [(0.0, "float32"), (1.0, "bfloat16")])
def test_pretrain_writes_loadable_weights_and_a_manifest(tmp_path, monkeypatch, dense_weight, teacher_dtype):
    rng = np.random.default_rng(0)

    def fake(split):
        n = 32 if split == "train" else 16
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)

    monkeypatch.setattr(pretrain_module, "fashion_mnist", fake)
    out = tmp_path / "vit.fmnist"
    cfg = PretrainConfig(
        steps=2,
        batch_size=8,
        warmup_steps=1,
        dense_weight=dense_weight,
        teacher_size=128,
        teacher_dtype=teacher_dtype,
    )
    manifest = pretrain(cfg, out, progress=False)
    assert manifest["recipe"]["teacher_dtype"] == teacher_dtype
    assert ("stage 3's map (112 channels)" in manifest["data"]["teacher"]) == bool(dense_weight)
    assert (
        manifest["steps"] == 2
        and manifest["images_seen"] == 16
        and 0 <= manifest["source_test_accuracy"] <= 1
    )
    assert -1 <= manifest["held_out_cosine"] <= 1 and manifest["history"][-1]["step"] == 2
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


def test_an_unknown_teacher_dtype_is_refused():
    with pytest.raises(RepAdapterError, match="--teacher-dtype 'float16' is not one of float32, bfloat16"):
        PretrainConfig(teacher_dtype="float16")
