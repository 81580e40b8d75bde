"""The family registry: each family's task and library, its head, and lookups by name."""

import pytest
import timm
import torch
from torch import nn

from repadapter import RepAdapterError
from repadapter.families import TASKS, Family, family_named, family_of, head_of, task_of
from repadapter.families.base import timm_classifier_prefixes
from repadapter.families.factory import create_base
from repadapter.training.tasks.segmentation import Segmenter


def _vit(**kwargs):
    args = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, **kwargs}
    return timm.create_model("vit_tiny_patch16_224", **args)


def test_each_family_names_its_task():
    assert task_of("segmenter") == "segmentation" and task_of("hf_videomae") == "video"
    for name in ("timm_vit", "timm_swin", "hf_vit", "tower_classifier", "open_clip_vit", "generic"):
        assert task_of(name) == "classification"
    assert task_of(_vit(num_classes=3)) == "classification"
    assert task_of(Segmenter(_vit(num_classes=0), 4)) == "segmentation"
    assert task_of(nn.Linear(2, 2)) == "classification"  # a model of no family


def test_the_video_factory_name_builds_a_model_of_the_video_task():
    pytest.importorskip("transformers")
    model = create_base("videomae_tiny6_patch4_32", 3, pretrained=False, num_frames=4)
    assert task_of(model) == "video" and family_of(model).name == "hf_videomae"
    assert model.pretrained_cfg["num_frames"] == 4 and head_of(model) == ("classifier",)
    with pytest.raises(
        RepAdapterError, match="vit_tiny6_patch4_32 is an image model; num_frames is for video"
    ):
        create_base("vit_tiny6_patch4_32", 3, pretrained=False, num_frames=4)


def test_unknown_family_names_are_refused_with_the_known_ones():
    assert family_named("timm_vit") is family_of(_vit())
    assert family_named("timm_vit").library == "timm" and family_named("hf_vit").library == "transformers"
    with pytest.raises(RepAdapterError, match="unknown model family 'timm_vitt'.* knows generic, .*timm_vit"):
        family_named("timm_vitt")
    with pytest.raises(RepAdapterError, match="unknown model family 'nope'"):
        task_of("nope")


def test_a_family_with_an_unknown_task_or_library_is_refused():
    parts = {
        "description": "",
        "matches": lambda m: False,
        "sites": lambda m, p: [],
        "head_prefixes": lambda m: (),
    }
    with pytest.raises(RepAdapterError, match="task 'detection' is not one of"):
        Family(name="x", library="timm", task="detection", **parts)
    with pytest.raises(RepAdapterError, match="library 'keras' is not one of"):
        Family(name="x", library="keras", **parts)
    assert Family(name="x", library="timm", **parts).task == TASKS[0]


def test_the_head_comes_from_the_family_and_else_from_timms_record():
    vit = _vit(num_classes=3)
    assert head_of(vit) == family_of(vit).head_prefixes(vit) == ("head",)
    segmenter = Segmenter(_vit(num_classes=0), 4)
    assert head_of(segmenter) == ("decode_head",) != timm_classifier_prefixes(segmenter.backbone)
    unsupported = timm.create_model("mobilenetv3_small_050", num_classes=3)  # of no family
    with pytest.raises(RepAdapterError):
        family_of(unsupported)
    assert head_of(unsupported) == ("classifier",)
    assert head_of(nn.Sequential(nn.Linear(2, 2))) == ()
    assert torch.is_tensor(unsupported.get_submodule(head_of(unsupported)[0]).weight)
