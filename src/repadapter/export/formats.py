"""Deploying a merged model through the usual export paths: ONNX and TorchScript.

A merged model is the vanilla architecture, so it exports exactly like the model the user
started from; each export is checked against PyTorch on a random batch before it is kept.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.files import atomic_write
from repadapter.training.tasks.base import logits_of


def _check_deployable(model: nn.Module) -> None:
    if any(".repadapter." in name for name, _ in model.named_parameters()):
        raise RepAdapterError(
            "this model still has RepAdapters; export repadapter.merge(model), the deployed form"
        )


def _example(batch: int, input_size: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, *input_size, generator=torch.Generator().manual_seed(seed))


def export_onnx(
    model: nn.Module, path: str | os.PathLike[str], input_size: tuple[int, int], opset: int = 17
) -> float:
    """Write ``model`` as ONNX (dynamic batch) and return max |onnxruntime - PyTorch| on a batch of 3."""
    try:
        import onnxruntime
    except ImportError as err:
        raise RepAdapterError(
            "ONNX export needs onnx and onnxruntime: pip install 'repadapter[export]'"
        ) from err
    _check_deployable(model)
    model = model.eval().cpu()

    def write(tmp: Path) -> None:
        fastpath = torch.backends.mha.get_fastpath_enabled()
        # nn.MultiheadAttention's fused inference kernel (open_clip's attention) has no ONNX form
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes about Python control flow in timm
                torch.onnx.export(
                    model,
                    (_example(2, input_size, 0),),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=["images"],
                    output_names=["logits"],
                    dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                )
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)

    path = atomic_write(path, write)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = _example(3, input_size, 1)
    (logits,) = session.run(None, {"images": images.numpy()})
    with torch.inference_mode():
        return (torch.from_numpy(logits) - logits_of(model(images))).abs().max().item()


def export_torchscript(model: nn.Module, path: str | os.PathLike[str], input_size: tuple[int, int]) -> float:
    """Write ``torch.jit.script(model)`` and return max |reloaded - PyTorch| on a batch of 3."""
    _check_deployable(model)
    model = model.eval().cpu()
    try:
        scripted = torch.jit.script(model)
    except Exception as err:  # TorchScript reports unscriptable Python in many exception types
        raise RepAdapterError(f"TorchScript cannot compile {type(model).__name__}: {err}") from err
    path = atomic_write(path, lambda tmp: torch.jit.save(scripted, str(tmp)))
    reloaded = torch.jit.load(str(path))
    images = _example(3, input_size, 1)
    with torch.inference_mode():
        return (reloaded(images) - model(images)).abs().max().item()
