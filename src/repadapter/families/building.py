"""What the model builders share (`repadapter.families.timm_models`, ``.towers``, ``.video``),
below them and below the factory that dispatches to them (`repadapter.families.factory`):
the model-name prefixes, input statistics, the Hugging Face Hub and transformers checks,
and stochastic depth as hooks.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.base import is_instance_of

# Model-name prefixes. timm's own: a folder with config.json and weights, a Hub repo.
TIMM_LOCAL = "local-dir:"
TIMM_HUB = "hf-hub:"
# repadapter's: a Hugging Face transformers checkpoint (folder or hub id), an open_clip model.
HF_PREFIX = "hf:"
OPEN_CLIP_PREFIX = "open_clip:"

# ImageNet's per-channel mean and std, which many checkpoints normalise their inputs with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CHECKPOINT_FIX = "Give a state dict saved as .safetensors (or a plain torch.save of tensors)."


def hub_unavailable(repo_id: str, files: tuple[str, ...]) -> str | None:
    """Why Hugging Face Hub repository ``repo_id`` cannot be read now, or None: it is reachable,
    or one of ``files`` is in the local cache (of those that are required, the first listed
    must be, when it is a config file)."""
    import huggingface_hub

    def cached(file: str) -> bool:
        return isinstance(huggingface_hub.try_to_load_from_cache(repo_id, file), str)

    config_ok = not files[0].endswith(".json") or cached(files[0])
    weights = files[1:] if files[0].endswith(".json") else files
    if config_ok and (not weights or any(cached(f) for f in weights)):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "on", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    return unreachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


def unreachable(url: str) -> str | None:
    """Why ``url``'s host cannot be reached within 5 s, or None."""
    host = urlparse(url).hostname or url
    try:
        socket.create_connection((host, urlparse(url).port or 443), timeout=5).close()
    except OSError as err:
        return f"{host} cannot be reached ({err})"
    return None


def hf_local_file(source: str, file: str, fetch: bool = False) -> Path | None:
    """``file`` of the Hugging Face checkpoint ``source``: from a local folder, or from the
    local cache of a hub id; with ``fetch``, downloaded when the hub can be reached (else a
    short error). None when it is not there."""
    folder = Path(source)
    if folder.is_dir():
        return folder / file if (folder / file).is_file() else None
    if folder.is_absolute() or source.startswith(".") or source.count("/") > 1 or not source:
        raise RepAdapterError(f"{HF_PREFIX}{source}: there is no folder {source}")
    import huggingface_hub

    cached = huggingface_hub.try_to_load_from_cache(source, file)
    if isinstance(cached, str):
        return Path(cached)
    if not fetch:
        return None
    why = hub_unavailable(source, (file,))
    if why:
        raise RepAdapterError(
            f"{HF_PREFIX}{source} is not in the local Hugging Face cache and {why}; give a local "
            "save_pretrained folder (hf:<folder>)"
        )
    try:
        return Path(huggingface_hub.hf_hub_download(source, file))
    except huggingface_hub.errors.EntryNotFoundError:
        return None
    except Exception as err:  # the hub library reports a missing repo in many exception types
        raise RepAdapterError(f"{HF_PREFIX}{source}: cannot read {file} from the hub: {err}") from err


def hf_model_type(source: str, fetch: bool = False) -> str | None:
    """The ``model_type`` of Hugging Face checkpoint ``source`` (None when its config is not
    local and ``fetch`` is off)."""
    path = hf_local_file(source, "config.json", fetch)
    if path is None:
        if fetch or Path(source).is_dir():
            raise RepAdapterError(f"{HF_PREFIX}{source} has no config.json; save it with save_pretrained")
        return None
    return str(json.loads(path.read_text()).get("model_type"))


def transformers_module() -> Any:
    """The ``transformers`` package, or a short error saying how to install it."""
    try:
        import transformers
    except ImportError as err:
        raise RepAdapterError("Hugging Face models need transformers: pip install 'transformers>=5'") from err
    return transformers


class DropPathHook:
    """A forward hook that drops a residual branch's output per sample (stochastic depth) in
    training mode, scaling the kept ones by ``1 / (1 - rate)``. A class, so models pickle."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        if not module.training or self.rate == 0.0:
            return output
        if isinstance(output, tuple):  # an attention module's (output, weights)
            return (self(module, inputs, output[0]), *output[1:])
        keep = 1.0 - self.rate
        mask = output.new_empty((output.shape[0],) + (1,) * (output.ndim - 1)).bernoulli_(keep)
        return output * mask / keep


def add_drop_path(model: nn.Module, rate: float, layer_class: str, branches: tuple[str, str]) -> nn.Module:
    """Stochastic depth on each ``layer_class`` layer's two residual branches, the outputs of
    its submodules ``branches`` (before the residual add), rising linearly from 0 in the first
    layer to ``rate`` in the last, as timm does. Nothing enters the state dict, and the model
    stays its library's class."""
    if not 0.0 <= rate < 1.0:
        raise RepAdapterError(f"drop_path must be in [0, 1), got {rate}")
    if rate == 0.0:
        return model
    layers: list[Any] = [m for m in model.modules() if is_instance_of(m, layer_class)]
    for i, layer in enumerate(layers):
        layer_rate = rate * i / max(len(layers) - 1, 1)
        if layer_rate > 0:
            for branch in branches:
                layer.get_submodule(branch).register_forward_hook(DropPathHook(layer_rate))
    return model
