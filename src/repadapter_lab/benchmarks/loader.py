"""Images per second out of the training loader, decoding every epoch against decoding once."""

from __future__ import annotations

import statistics
import time
from typing import Any

from torch.utils.data import DataLoader

from repadapter.training.data import load_task
from repadapter.training.data.cache import CachedImages
from repadapter.training.data.lists import ImageListDataset
from repadapter.training.data.transforms import eval_transform


def _epoch_seconds(dataset: Any, batch: int, workers: int) -> float:
    began = time.perf_counter()
    for _ in DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers):
        pass
    return time.perf_counter() - began


def run_loader(
    data: str, img_size: int, split: str, epochs: int, batch: int, workers: int, cache: str
) -> dict[str, Any]:
    """Epochs of ``split`` through the loader, alternating the two pipelines so that both see the
    same machine; the cached one's first epoch (when it decodes) is reported apart."""
    task = load_task(data)
    samples = task.split(split)
    prep = {
        "input_size": [img_size, img_size],
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "interpolation": "bicubic",
    }
    decoded = ImageListDataset(samples, eval_transform(prep))
    began = time.perf_counter()
    cached = CachedImages(samples, prep, cache, workers)
    fill = time.perf_counter() - began
    times: dict[str, list[float]] = {"decode every epoch": [], "decoded once": []}
    for _ in range(epochs):
        times["decode every epoch"].append(_epoch_seconds(decoded, batch, workers))
        times["decoded once"].append(_epoch_seconds(cached, batch, workers))
    rows = {
        name: {
            "median_epoch_seconds": statistics.median(t),
            "images_per_second": len(samples) / statistics.median(t),
        }
        for name, t in times.items()
    }
    return {
        "data": data,
        "split": split,
        "images": len(samples),
        "img_size": img_size,
        "batch": batch,
        "workers": workers,
        "epochs": epochs,
        "cache": cached.mode,
        "cache_fill_seconds": fill,
        "pipelines": rows,
        "speedup": rows["decoded once"]["images_per_second"]
        / rows["decode every epoch"]["images_per_second"],
    }


def render_loader(result: dict[str, Any]) -> str:
    lines = [
        f"{result['data']} {result['split']}: {result['images']} images at {result['img_size']} px, batch "
        f"{result['batch']}, {result['workers']} workers, median of {result['epochs']} epochs",
        "",
        "| pipeline | images/s | epoch (s, median) |",
        "|---|---|---|",
    ]
    for name, row in result["pipelines"].items():
        lines.append(f"| {name} | {row['images_per_second']:.0f} | {row['median_epoch_seconds']:.3f} |")
    lines += [
        "",
        f"Decoded once is {result['speedup']:.1f}x the images per second; filling the {result['cache']} "
        f"cache took {result['cache_fill_seconds']:.2f} s, once for every later epoch and scale.",
    ]
    return "\n".join(lines) + "\n"
