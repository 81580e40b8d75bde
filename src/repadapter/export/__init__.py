"""Deployment: a merged model as ONNX or TorchScript, and predictions of a trained model on images."""

from repadapter.export.formats import export_onnx, export_torchscript

__all__ = ["export_onnx", "export_torchscript"]
