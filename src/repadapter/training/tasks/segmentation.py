"""Semantic segmentation: a ViT or Swin backbone with a light SETR-naive decode head.

RepAdapters go into the backbone (its family's sites, under ``backbone.``); the adapters and the
decode head train. Merging folds the adapters into the backbone, so the deployed `Segmenter` holds
a vanilla timm backbone and computes the same dense logits.

Evaluation scores a confusion matrix over pixels (`repadapter.training.tasks.base.confusion`) with
`segmentation_scores`: mIoU as mmsegmentation reports it, pixel accuracy and mean accuracy.
``cfg.seg_eval`` picks how eval images are served: ``"resize"`` (resized to the model's input
size) or ``"slide"`` (short side resized to the input size, aspect ratio kept). One predictor,
`predict_segmentation`, serves both: windows of the input size averaged (`slide_logits`), which
for a resized image is a single forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils.data import Dataset

from repadapter.errors import RepAdapterError
from repadapter.families.factory import create_base
from repadapter.training.activations import set_grad_checkpointing
from repadapter.training.config import TrainConfig
from repadapter.training.data.segmentation import SegmentationDataset
from repadapter.training.data.transforms import preprocessing
from repadapter.training.tasks.base import IGNORE_INDEX, TaskKind, logits_of

HEAD_PREFIX = "decode_head"


def _groups(channels: int) -> int:
    """32 groups where the width allows it (the GroupNorm paper's default), else the largest divisor."""
    return math.gcd(channels, 32)


class DecodeHead(nn.Module):
    """SETR-naive: a 1x1 conv, GroupNorm and ReLU per token, then a 1x1 conv to class logits.

    GroupNorm, not SETR's BatchNorm, for two reasons. An adapter file holds parameters only, so a
    BatchNorm's running statistics (buffers) would not travel with it and a loaded adapter would
    predict differently from the trained one. And segmentation batches are small (one image per
    device is common, and sliding-window evaluation runs window batches of any size), where batch
    statistics are noisy; GroupNorm computes the same thing in training and evaluation.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, channels, 1)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.act(self.norm(self.proj(features)))))


def head_width(backbone: nn.Module, levels: int) -> int:
    """Channels of the last ``levels`` feature maps of ``backbone`` (timm's ``feature_info``),
    which the decode head reads concatenated."""
    info: list[dict[str, Any]] = backbone.feature_info  # type: ignore[assignment]
    return sum(int(entry["num_chs"]) for entry in info[-levels:])


class Segmenter(nn.Module):
    """A timm backbone (built with ``num_classes=0``) and a `DecodeHead` on its token maps.

    ``levels`` feature maps are taken from the last ``levels`` blocks (ViT) or stages (Swin) with
    timm's ``forward_intermediates`` (the backbone's final norm applied where timm applies it),
    resized to the finest of them and concatenated: ``levels=1`` is SETR-naive on the last block.
    The logits are upsampled bilinearly to the input's height and width.

    ``pretrained_cfg`` is the backbone's, with ``classifier="decode_head"`` and ``num_classes``, so
    the methods, `repadapter.inject` and adapter files treat the decode head as the classifier
    and record the backbone's name as the base model.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        levels: int = 1,
        channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        info = getattr(backbone, "feature_info", None)
        if not callable(getattr(backbone, "forward_intermediates", None)) or not isinstance(info, list):
            raise RepAdapterError(
                f"a Segmenter needs a timm backbone with forward_intermediates and feature_info "
                f"(VisionTransformer, SwinTransformer); got {type(backbone).__qualname__}"
            )
        if not 1 <= levels <= len(info):
            raise RepAdapterError(
                f"levels={levels} is out of range: {type(backbone).__name__} has {len(info)} "
                f"blocks/stages to take feature maps from; use 1..{len(info)}"
            )
        if num_classes < 1:
            raise RepAdapterError(f"a Segmenter needs num_classes >= 1, got {num_classes}")
        self.backbone = backbone
        self.levels = levels
        self.num_classes = num_classes
        height, width = preprocessing(backbone)["input_size"]
        self.input_size = (int(height), int(width))
        in_channels = head_width(backbone, levels)
        self.decode_head = DecodeHead(in_channels, num_classes, channels, dropout)
        cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
        self.pretrained_cfg: dict[str, Any] = {**cfg, "classifier": HEAD_PREFIX, "num_classes": num_classes}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the backbone's blocks (timm's switch); the head is small."""
        set_grad_checkpointing(self.backbone, enable)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The concatenated (N, C, h, w) feature maps the decode head reads."""
        maps = self.backbone.forward_intermediates(  # type: ignore[operator]
            x, indices=self.levels, norm=True, output_fmt="NCHW", intermediates_only=True
        )
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        maps = [m if m.shape[-2:] == size else F.interpolate(m, size, mode="bilinear") for m in maps]
        return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, num_classes, H, W) logits."""
        logits = self.decode_head(self.features(x))
        return F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=False)


def create_segmenter(cfg: TrainConfig, num_classes: int) -> Segmenter:
    """The run's backbone (``cfg.model`` with its weights, without classifier) under a new decode
    head reading ``cfg.seg_levels`` feature maps."""
    backbone = create_base(cfg.model, 0, cfg.pretrained, cfg.checkpoint, cfg.drop_path, cfg.img_size)
    return Segmenter(backbone, num_classes, cfg.seg_levels)


def match_trained_head(model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """``model``, or for a Segmenter whose decode head reads fewer or more feature maps than the
    trained head in ``tensors`` (an adapter file's or a merged checkpoint's), the same backbone
    under a head with that many levels, found from the head's input width. Lets eval and merge
    rebuild a ``--seg-levels`` run from its file alone; a width no level count gives is refused."""
    weight = tensors.get(f"{HEAD_PREFIX}.proj.weight")
    if not isinstance(model, Segmenter) or weight is None:
        return model
    widths = [int(entry["num_chs"]) for entry in model.backbone.feature_info]  # type: ignore[union-attr]
    for levels in range(1, len(widths) + 1):
        if head_width(model.backbone, levels) == weight.shape[1]:
            return model if levels == model.levels else Segmenter(model.backbone, model.num_classes, levels)
    raise RepAdapterError(
        f"the trained decode head reads {weight.shape[1]} channels, which no number of the backbone's "
        f"last feature maps gives (widths {widths}); was it trained on another backbone?"
    )


# --- metrics ----------------------------------------------------------------------------------


def segmentation_scores(matrix: torch.Tensor) -> dict[str, float]:
    """mIoU, pixel accuracy and mean (per-class) accuracy of a pixel confusion matrix (rows:
    target, columns: prediction), as fractions.

    A class that is neither in the targets nor predicted (empty union) has no IoU and is left
    out of the mean, as mmsegmentation does; mean accuracy averages the classes present in the
    targets. Ignored pixels never reach the matrix (`repadapter.training.tasks.base.confusion`).
    """
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise RepAdapterError(f"a confusion matrix is square (classes x classes), got {tuple(matrix.shape)}")
    m = matrix.to(torch.float64)
    tp = m.diagonal()
    targets, predicted = m.sum(1), m.sum(0)
    union = targets + predicted - tp
    total = float(m.sum())
    present, seen = union > 0, targets > 0
    return {
        "mIoU": float((tp[present] / union[present]).mean()) if present.any() else 0.0,
        "pixel_accuracy": float(tp.sum()) / total if total else 0.0,
        "mean_accuracy": float((tp[seen] / targets[seen]).mean()) if seen.any() else 0.0,
    }


# --- inference --------------------------------------------------------------------------------


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one side: every ``stride``, the last one flush with the far edge."""
    count = math.ceil(max(size - window, 0) / stride) + 1
    return sorted({min(i * stride, size - window) for i in range(count)})


def slide_logits(
    model: nn.Module,
    images: torch.Tensor,
    window: tuple[int, int],
    stride: tuple[int, int],
    num_classes: int,
) -> torch.Tensor:
    """(N, num_classes, H, W) logits of ``model`` averaged over overlapping ``window`` crops.

    Windows start every ``stride`` pixels, the last one flush with the image's edge, so every
    pixel is covered; an image smaller than the window is padded at the bottom and right with
    zeros (the mean colour, after normalisation) and the padding cropped off the result.
    """
    (wh, ww), (sh, sw) = window, stride
    if min(wh, ww, sh, sw) < 1 or sh > wh or sw > ww:
        raise RepAdapterError(
            f"sliding window {window} with stride {stride}: need positive sizes and stride <= window, "
            "or some pixels are never predicted"
        )
    n, _, h, w = images.shape
    ph, pw = max(h, wh), max(w, ww)
    if (ph, pw) != (h, w):
        images = F.pad(images, (0, pw - w, 0, ph - h))
    total = images.new_zeros(n, num_classes, ph, pw)
    count = images.new_zeros(1, 1, ph, pw)
    for y in _starts(ph, wh, sh):
        for x in _starts(pw, ww, sw):
            out = logits_of(model(images[:, :, y : y + wh, x : x + ww]))
            if out.shape != (n, num_classes, wh, ww):
                raise RepAdapterError(
                    f"the model gave {tuple(out.shape)} for a {wh}x{ww} window, not "
                    f"{(n, num_classes, wh, ww)}: slide_logits needs a dense model such as a Segmenter"
                )
            total[:, :, y : y + wh, x : x + ww] += out
            count[:, :, y : y + wh, x : x + ww] += 1
    return (total / count)[:, :, :h, :w]


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (``.module``) or torch.compile (``._orig_mod``) wrapper."""
    while not isinstance(model, Segmenter):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return model


def predict_segmentation(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits of a batch of eval images, for either ``seg_eval``: windows of the model's input
    size every two thirds of a window (the stride mmsegmentation's ADE20K configs use, 341 for
    512), averaged. Images at the input size (``"resize"``) are one window: one forward pass,
    exactly ``model(images)``; larger ones (``"slide"``) are covered by overlapping windows."""
    inner = _unwrapped(model)
    if not isinstance(inner, Segmenter):
        raise RepAdapterError(f"segmentation evaluation needs a Segmenter, got {type(inner).__name__}")
    window = inner.input_size
    stride = (max(1, window[0] * 2 // 3), max(1, window[1] * 2 // 3))
    return slide_logits(model, images, window, stride, inner.num_classes)


# --- the task kind ----------------------------------------------------------------------------


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy over the pixels that are not ``IGNORE_INDEX``; zero (with a
    gradient path) for a batch whose pixels are all ignored, where the mean would be NaN."""
    if not bool((targets != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)


def segmentation_preprocessing(model: nn.Module, normalization: str) -> dict[str, Any]:
    """The backbone's input size and statistics (`repadapter.training.data.transforms.preprocessing`)."""
    return preprocessing(getattr(_unwrapped(model), "backbone", model), normalization)


def _train_dataset(samples: Sequence[Any], prep: dict[str, Any], cfg: TrainConfig) -> Dataset:
    """Pairs resized to the input size, without augmentation: the paper's plain recipe (the
    engine's augmentation is classification's; ``SegmentationDataset(flip=True)`` is there for
    other callers)."""
    return SegmentationDataset(samples, prep, train=True)


def _eval_dataset(samples: Sequence[Any], prep: dict[str, Any], cfg: TrainConfig) -> Dataset:
    """Pairs resized to the input size (``seg_eval="resize"``), or with the short side resized and
    the aspect kept (``"slide"``: sizes differ, so batch with the dataset's ``collate_fn``)."""
    return SegmentationDataset(samples, prep, train=False, short_side=cfg.seg_eval == "slide")


SEGMENTATION = TaskKind(
    name="segmentation",
    metric="mIoU",
    build_model=create_segmenter,
    preprocessing=segmentation_preprocessing,
    train_dataset=_train_dataset,
    eval_dataset=_eval_dataset,
    loss=segmentation_loss,
    score=segmentation_scores,
    predict=predict_segmentation,
)
