"""Image preprocessing: the paper's plain resize for VTAB, timm's augmentation for few-shot."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.data import create_transform, resolve_data_config
from torch import nn
from torchvision import transforms

from repadapter.errors import RepAdapterError
from repadapter.families.building import IMAGENET_MEAN, IMAGENET_STD

NORMALIZATIONS = ("model", "imagenet")


def preprocessing(model: nn.Module, normalization: str = "model") -> dict[str, Any]:
    """Input size, mean and std for ``model``: its own (timm's pretrained_cfg) or ImageNet's.

    The official RepAdapter code normalised with ImageNet statistics whatever the checkpoint;
    ``"model"`` uses what the checkpoint was trained with. The choice is recorded with a run.
    """
    if normalization not in NORMALIZATIONS:
        raise RepAdapterError(f"normalization {normalization!r} is not one of {NORMALIZATIONS}")
    cfg = resolve_data_config({}, model=model)
    mean, std = (cfg["mean"], cfg["std"]) if normalization == "model" else (IMAGENET_MEAN, IMAGENET_STD)
    # A ViT built at another img_size than its checkpoint's records the size it was built at.
    built_at = getattr(getattr(model, "patch_embed", None), "img_size", None)
    return {
        "normalization": normalization,
        "input_size": list(built_at or cfg["input_size"][1:]),
        "mean": list(mean),
        "std": list(std),
        "interpolation": "bicubic",
    }


def resize_transform(prep: dict[str, Any]) -> Callable:
    """Bicubic resize of a PIL image to the model's input size (no crop)."""
    return transforms.Resize(tuple(prep["input_size"]), interpolation=transforms.InterpolationMode.BICUBIC)


def tensor_transform(prep: dict[str, Any]) -> Callable:
    """A resized image (PIL, or uint8 HWC pixels) to a normalised CHW float tensor."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(prep["mean"], prep["std"])])


def eval_transform(prep: dict[str, Any]) -> Callable:
    """Bicubic resize to the model's input size (no crop), then normalise: the paper's VTAB
    preprocessing, used for training too when there is no augmentation."""
    return transforms.Compose([resize_transform(prep), tensor_transform(prep)])


def fewshot_train_transform(prep: dict[str, Any]) -> Callable:
    """The few-shot recipe's augmentation: random resized crop, flip, colour jitter 0.4,
    RandAugment rand-m9-mstd0.5-inc1 and random erasing 0.25."""
    return create_transform(
        input_size=tuple(prep["input_size"]),
        is_training=True,
        color_jitter=0.4,
        auto_augment="rand-m9-mstd0.5-inc1",
        interpolation="bicubic",
        re_prob=0.25,
        re_mode="pixel",
        re_count=1,
        mean=tuple(prep["mean"]),
        std=tuple(prep["std"]),
    )
