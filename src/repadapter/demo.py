"""The self-contained main job: inject -> train -> save -> merge -> deploy, on generated data.

Until the project ships pretrained backbones and a real transfer suite, this shows the
mechanics end to end with no download: a small timm ViT learns to tell oriented gratings
apart through its adapters and head only, then is merged and checked and timed against the
vanilla architecture. The backbone is randomly initialised, so the accuracy says nothing about
transfer quality; the merge error, parameter counts and latency ratio are the point.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repadapter.backbones import create
from repadapter.benchmarks.latency import measure_latency
from repadapter.config import RepAdapterConfig
from repadapter.model import count_parameters, inject, load_adapter, merge, save_adapter


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo uses; the defaults finish in well under a minute on 2 CPU cores."""

    model: str = "vit_tiny_patch16_224"
    img_size: int = 32
    patch_size: int = 8
    classes: int = 4
    train_images: int = 512
    test_images: int = 256
    steps: int = 40
    batch_size: int = 32
    lr: float = 1e-2
    placement: str = "block"
    dim: int = 8
    groups: int = 2
    scale: float = 1.0
    latency_rounds: int = 100
    seed: int = 0


def gratings(count: int, classes: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy sinusoidal gratings; the label is the orientation (``classes`` angles in [0, pi))."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (count,), generator=g)
    angle = labels.float() * math.pi / classes + (torch.rand(count, generator=g) - 0.5) * 0.2
    freq = 2 * math.pi * (2 + 3 * torch.rand(count, generator=g)) / size
    phase = 2 * math.pi * torch.rand(count, generator=g)
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    along = xx[None] * angle.cos()[:, None, None] + yy[None] * angle.sin()[:, None, None]
    wave = torch.sin(freq[:, None, None] * along + phase[:, None, None])
    color = 0.5 + 0.5 * torch.rand(count, 3, 1, 1, generator=g)
    images = wave[:, None] * color + 0.3 * torch.randn(count, 3, size, size, generator=g)
    return images, labels


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(images).argmax(-1) == labels).float().mean().item()


def run_demo(settings: DemoSettings, log: Any = print) -> dict[str, Any]:
    """Run the demo and return its measurements."""
    torch.manual_seed(settings.seed)

    def build() -> nn.Module:
        return create(
            settings.model,
            img_size=settings.img_size,
            patch_size=settings.patch_size,
            num_classes=settings.classes,
        )

    base = build().eval()

    def fresh() -> nn.Module:
        """Another copy of the vanilla base model, as a user would load it again."""
        model = build().eval()
        model.load_state_dict(base.state_dict())
        return model

    model = fresh()
    config = RepAdapterConfig(
        dim=settings.dim, groups=settings.groups, scale=settings.scale, placement=settings.placement
    )
    inject(model, config)
    counts = count_parameters(model)
    log(
        f"model {settings.model} at {settings.img_size}px (random init), placement={settings.placement}: "
        f"{counts.adapter:,} adapter + {counts.trainable - counts.adapter:,} head parameters trained, "
        f"{100 * counts.trainable / counts.backbone:.2f}% of the {counts.backbone:,} backbone"
    )

    x_train, y_train = gratings(settings.train_images, settings.classes, settings.img_size, settings.seed)
    x_test, y_test = gratings(settings.test_images, settings.classes, settings.img_size, settings.seed + 1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    order = torch.randperm(settings.train_images, generator=torch.Generator().manual_seed(settings.seed))
    start = time.perf_counter()
    model.train()
    for step in range(settings.steps):
        index = order.roll(-step * settings.batch_size)[: settings.batch_size]
        loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 0 or (step + 1) % max(1, settings.steps // 5) == 0:
            log(f"  step {step + 1:4d}/{settings.steps}  loss {loss.item():.4f}")
    train_seconds = time.perf_counter() - start

    accuracy = _accuracy(model, x_test, y_test)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_adapter(model, Path(tmp) / "demo.safetensors")
        file_bytes = path.stat().st_size
        reloaded = load_adapter(fresh(), path)
    deployed = merge(model)
    vanilla = build().eval()
    vanilla.load_state_dict(deployed.state_dict(), strict=True)
    with torch.no_grad():
        unmerged_logits, merged_logits = model(x_test), vanilla(x_test)
        reload_diff = (reloaded(x_test) - unmerged_logits).abs().max().item()
    max_diff = (merged_logits - unmerged_logits).abs().max().item()
    merged_accuracy = _accuracy(vanilla, x_test, y_test)
    log(f"test accuracy {accuracy:.3f} (chance {1 / settings.classes:.3f}); merged {merged_accuracy:.3f}")
    log(f"reloaded from the adapter file vs trained: max |delta logits| = {reload_diff:.2e}")
    log(f"merged vs unmerged: max |delta logits| = {max_diff:.2e}")
    log(
        f"parameters: base {sum(p.numel() for p in base.parameters()):,}, merged "
        f"{sum(p.numel() for p in vanilla.parameters()):,}, with adapters {counts.total:,}; "
        f"adapter file {file_bytes:,} bytes"
    )

    one = x_test[:1]
    latency = measure_latency(
        {"base": base, "merged": vanilla, "unmerged": model}, one, rounds=settings.latency_rounds
    )
    ratios = {name: stats.median / latency["base"].median for name, stats in latency.items()}
    log(
        f"latency at batch 1, {torch.get_num_threads()} threads (median of {settings.latency_rounds}, "
        "interleaved): "
        + ", ".join(f"{n} {s.median * 1e3:.2f} ms ({ratios[n]:.2f}x)" for n, s in latency.items())
    )
    return {
        "settings": settings.__dict__,
        "parameters": {
            "base": sum(p.numel() for p in base.parameters()),
            "merged": sum(p.numel() for p in vanilla.parameters()),
            "with_adapters": counts.total,
            "adapter": counts.adapter,
            "trained": counts.trainable,
        },
        "train_seconds": train_seconds,
        "test_accuracy": accuracy,
        "merged_test_accuracy": merged_accuracy,
        "max_abs_logit_diff": max_diff,
        "reload_max_abs_logit_diff": reload_diff,
        "adapter_file_bytes": file_bytes,
        "latency_batch1": {n: s.as_dict() for n, s in latency.items()},
        "latency_ratio_to_base": ratios,
    }
