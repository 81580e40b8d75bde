"""`repadapter pretrain`: the in-house ViT's supervised pretraining on Fashion-MNIST.

No ViT weights are on the package registries, so the project makes its own: the 60k
Fashion-MNIST training images (Debian's ``dataset-fashion-mnist``; not a task of the offline
suite), upsampled to 32 px, each drawn in a random foreground and background colour so that
the model sees colour, with random crops and flips. The whole set sits in memory as one tensor:
no decoding per step. The weights and a manifest (command, data, epochs, wall time, source-task
accuracy) are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from torch.nn import functional
from tqdm.auto import tqdm

from repadapter.backbones import create
from repadapter.data.sources import FASHION_MNIST_DIR, fashion_mnist
from repadapter.engine.trainer import seed_everything
from repadapter.files import atomic_write


@dataclass(frozen=True)
class PretrainConfig:
    """The recipe; the defaults made the shipped ``vit_tiny6_patch4_32.fmnist`` weights."""

    model: str = "vit_tiny6_patch4_32"
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    label_smoothing: float = 0.1
    color_prob: float = 0.5
    seed: int = 0


def _to_inputs(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, size, size) in [0, 1], bicubic like the suite's resize."""
    x = images.float().div(255).unsqueeze(1)
    return functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def _augment(gray: torch.Tensor, color_prob: float, g: torch.Generator) -> torch.Tensor:
    """Random crop (pad 4), horizontal flip, and with ``color_prob`` a random foreground and
    background colour; returns RGB in [-1, 1] (mean = std = 0.5)."""
    n, _, h, w = gray.shape
    padded = functional.pad(gray, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2, n), generator=g)
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
    """Train ``cfg.model`` from scratch on Fashion-MNIST; write ``<out>.safetensors`` and
    ``<out>.json`` (the manifest). Returns the manifest."""
    from repadapter.benchmarks.provenance import provenance

    made_by = provenance()
    seed_everything(cfg.seed)
    model = create(cfg.model, num_classes=10)
    size = int(timm.data.resolve_data_config({}, model=model)["input_size"][-1])
    train_x, train_y = fashion_mnist("train")
    test_x, test_y = fashion_mnist("test")
    train_gray = _to_inputs(torch.from_numpy(train_x.copy()), size)
    test_gray = _to_inputs(torch.from_numpy(test_x.copy()), size)
    train_labels, test_labels = (
        torch.from_numpy(train_y.astype("int64")),
        torch.from_numpy(test_y.astype("int64")),
    )

    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or "pos_embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    steps_per_epoch = len(train_gray) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - cfg.warmup_steps) / (total - cfg.warmup_steps)))

    g = torch.Generator().manual_seed(cfg.seed)
    history = []
    began = time.perf_counter()
    bar = tqdm(total=total, desc="pretrain", disable=not progress)
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(train_gray), generator=g)
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x = _augment(train_gray[idx], cfg.color_prob, g)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = functional.cross_entropy(model(x), train_labels[idx], label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            step += 1
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
        test_acc = _accuracy(model, test_gray, test_labels)
        history.append({"epoch": epoch, "train_loss": loss_sum / steps_per_epoch, "test_acc": test_acc})
        bar.write(
            f"epoch {epoch}: train loss {loss_sum / steps_per_epoch:.4f}, Fashion-MNIST test {test_acc:.4f}"
        )
    bar.close()
    wall = time.perf_counter() - began

    weights = out.parent / f"{out.name}.safetensors"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    manifest = {
        "provenance": made_by,
        "model": cfg.model,
        "recipe": asdict(cfg),
        "data": {
            "source": "Fashion-MNIST (Debian package dataset-fashion-mnist, MIT license)",
            "files": {p.name: _sha256(p) for p in sorted(FASHION_MNIST_DIR.glob("*-ubyte.gz"))},
            "train_images": len(train_gray),
            "test_images": len(test_gray),
            "input": f"28 px upsampled bicubic to {size} px, grey replicated to RGB, mean = std = 0.5",
        },
        "epochs": cfg.epochs,
        "steps": total,
        "wall_seconds": wall,
        "source_test_accuracy": history[-1]["test_acc"],
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_file": weights.name,
        "weights_sha256": _sha256(weights),
    }
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(out.parent / f"{out.name}.json", lambda tmp: tmp.write_text(text))
    return manifest
