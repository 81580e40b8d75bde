"""A merged model goes through ONNX, TorchScript and torch.compile like the vanilla model."""

import sys

import numpy as np
import onnxruntime
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.utils.onnx import onnx_export

import repadapter as ra
from repadapter.export.formats import export_onnx, export_torchscript
from tests.conftest import build_vit


@pytest.fixture(scope="module")
def models():
    injected = ra.perturb_adapters(ra.inject(build_vit("vit_tiny", depth=2, img_size=32)), seed=4).eval()
    return injected, ra.merge(injected)


def test_onnx_export_matches_pytorch_at_any_batch(models, tmp_path, monkeypatch):
    injected, merged = models
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # the TorchScript exporter needs none
    diff = export_onnx(merged, tmp_path / "m.onnx", (32, 32))
    assert diff <= 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    images = torch.randn(5, 3, 32, 32)
    (logits,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        assert np.abs(logits - injected(images).numpy()).max() <= 1e-4  # the trained model's function


def test_torchscript_round_trip(models, tmp_path):
    _, merged = models
    assert export_torchscript(merged, tmp_path / "m.pt", (32, 32)) <= 1e-5


def test_torch_compile_runs_the_merged_model(models):
    injected, merged = models
    compiled = torch.compile(merged)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (compiled(images) - injected(images)).abs().max().item() <= 1e-5


def test_injected_models_are_not_exported(models, tmp_path):
    injected, _ = models
    with pytest.raises(ra.RepAdapterError, match="export repadapter.merge\\(model\\)"):
        export_onnx(injected, tmp_path / "x.onnx", (32, 32))
    with pytest.raises(ra.RepAdapterError, match="still has RepAdapters"):
        export_torchscript(injected, tmp_path / "x.pt", (32, 32))
    assert not list(tmp_path.iterdir())


def test_timm_scripts_take_a_merged_model_as_a_local_dir_folder(models, tmp_path):
    """timm's onnx_export.py and benchmark.py build their model by name, so they cannot take an
    injected model; a merged folder (ra.save_pretrained) is a name they build, with its weights and
    its constructor arguments (here depth=2, img_size=32). These are onnx_export.py's calls."""
    injected, merged = models
    folder = ra.save_pretrained(merged, tmp_path / "merged")
    model = timm.create_model(
        f"local-dir:{folder}",
        num_classes=10,
        in_chans=3,
        pretrained=True,
        checkpoint_path="",
        exportable=True,
    ).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(images) - merged(images)).abs().max() <= 1e-6  # exportable=True layers
        assert (model(images) - injected(images)).abs().max() <= 1e-5
    onnx_export(model, str(tmp_path / "m.onnx"), batch_size=2, input_size=(3, 32, 32), check_forward=True)

    # `repadapter merge` writes a checkpoint: --checkpoint reaches it when the name alone
    # rebuilds the architecture (not this depth-2 model), so the folder is the general route
    save_file(merged.state_dict(), str(tmp_path / "merged.safetensors"))
    with pytest.raises(RuntimeError, match="Unexpected key|Missing key"):
        timm.create_model(
            "vit_tiny_patch16_224", num_classes=10, checkpoint_path=str(tmp_path / "merged.safetensors")
        )
