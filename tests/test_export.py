"""A merged model goes through ONNX, TorchScript and torch.compile like the vanilla model."""

import numpy as np
import onnxruntime
import pytest
import torch

import repadapter as ra
from repadapter.export import export_onnx, export_torchscript
from tests.conftest import build_vit


@pytest.fixture(scope="module")
def models():
    injected = ra.perturb_adapters(ra.inject(build_vit("vit_tiny", depth=2, img_size=32)), seed=4).eval()
    return injected, ra.merge(injected)


def test_onnx_export_matches_pytorch_at_any_batch(models, tmp_path):
    injected, merged = models
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
