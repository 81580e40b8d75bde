"""Models rebuilt from files, as a Python user calls it: the base model with an adapter file
loaded, the same model with its adapters folded in, and a merged checkpoint loaded back."""

import pytest
import timm
import torch
from safetensors.torch import save_file

import repadapter as ra
from repadapter.export.deployed import (
    adapted_model,
    adapter_task,
    check_model_kind,
    deployed_model,
    merged_classifier,
    merged_model,
)
from repadapter.files import AdapterFile, save_tensor_file

NAME = "vit_tiny_patch16_224"


def _base(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(NAME, img_size=32, num_classes=4).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A base checkpoint, a trained model on it (random non-zero adapters, a trained head) and
    its adapter file with and without the backbone record; another base checkpoint."""
    folder = tmp_path_factory.mktemp("deployed")
    for seed in (0, 1):
        state = {k: v.contiguous() for k, v in _base(seed).state_dict().items()}
        save_file(state, str(folder / f"base{seed}.safetensors"))
    trained = ra.perturb_adapters(ra.inject(_base(0)), seed=3).eval()
    with torch.no_grad():
        trained.head.weight.add_(torch.randn_like(trained.head.weight))
    checkpoint = str(folder / "base0.safetensors")
    record = {"model": NAME, "img_size": 32, "checkpoint": checkpoint, "seed": 0}
    ra.save_adapter(trained, folder / "recorded.safetensors", backbone=record)
    ra.save_adapter(trained, folder / "unrecorded.safetensors")
    return folder, trained


def _flags(folder, seed: int = 0) -> dict:
    return {"pretrained": False, "checkpoint": str(folder / f"base{seed}.safetensors"), "img_size": 32}


def _images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_deployed_model_is_the_trained_model_with_adapters_folded_in(files):
    folder, trained = files
    adapted = adapted_model(folder / "recorded.safetensors", NAME, **_flags(folder)).eval()
    deployed = deployed_model(folder / "recorded.safetensors", NAME, **_flags(folder))
    assert (deployed.num_classes, deployed.task) == (4, "classification")
    assert ra.has_adapters(adapted) and not any("adapter" in key for key in deployed.model.state_dict())
    plain = timm.create_model(NAME, img_size=32, num_classes=4).eval()
    plain.load_state_dict(deployed.model.state_dict(), strict=True)  # a vanilla timm model
    x = _images()
    with torch.no_grad():
        expected = trained(x)
        assert (adapted(x) - expected).abs().max() <= 1e-5
        assert (deployed.model.eval()(x) - expected).abs().max() <= 1e-4
        assert (plain(x) - expected).abs().max() <= 1e-4
        assert (expected - _base(0)(x)).abs().max() > 1e-2  # the adapters and head change the output


def test_a_file_without_its_backbone_record_is_applied_with_a_warning(files):
    folder, _ = files
    with pytest.warns(UserWarning, match="does not record the backbone it was trained on"):
        deployed_model(folder / "unrecorded.safetensors", NAME, **_flags(folder))


def test_another_backbone_is_refused_with_the_flags_that_rebuild_the_right_one(files):
    folder, _ = files
    with pytest.raises(ra.RepAdapterError, match="trained on another backbone") as caught:
        adapted_model(folder / "recorded.safetensors", NAME, **_flags(folder, seed=1))
    assert f"--model {NAME} --img-size 32 --checkpoint {folder / 'base0.safetensors'}" in str(caught.value)


def test_the_task_comes_from_the_family_and_a_video_adapter_needs_a_video_model():
    def file(family: str) -> AdapterFile:
        meta = {"family": family, "base_model": "videomae_tiny6_patch4_32.fmnist"}
        return AdapterFile(ra.RepAdapterConfig(), meta, {}, "a.safetensors")

    assert [adapter_task(file(f)) for f in ("hf_videomae", "segmenter", "timm_vit")] == [
        "video",
        "segmentation",
        "classification",
    ]
    with pytest.raises(ra.RepAdapterError, match=f"--model {NAME} builds an image model"):
        check_model_kind(file("hf_videomae"), NAME)
    check_model_kind(file("timm_vit"), NAME)


def test_a_merged_checkpoint_loads_back_strictly_or_says_why_not(files, tmp_path):
    folder, trained = files
    deployed = deployed_model(folder / "recorded.safetensors", NAME, **_flags(folder))
    path = tmp_path / "merged.safetensors"
    save_tensor_file(path, deployed.model.state_dict(), {"num_classes": "4"})
    model, num_classes = merged_classifier(path, NAME, img_size=32)
    with torch.no_grad():
        assert num_classes == 4 and (model.eval()(_images()) - trained(_images())).abs().max() <= 1e-4
    save_tensor_file(tmp_path / "bare.safetensors", deployed.model.state_dict())
    with pytest.raises(ra.RepAdapterError, match="does not record its number of classes"):
        merged_classifier(tmp_path / "bare.safetensors", NAME, img_size=32)
    with pytest.raises(ra.RepAdapterError, match=f"m.safetensors does not fit {NAME} with 7 classes"):
        merged_model(deployed.model.state_dict(), NAME, 7, img_size=32, label="m.safetensors")
