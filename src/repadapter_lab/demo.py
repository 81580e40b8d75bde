"""The main job: adapt the pretrained in-house ViT to an offline-suite task, end to end.

inject -> train -> save adapter -> merge -> deploy, on real pretrained weights and a task of
the offline suite that is generated in code (so it needs no source package): RepAdapter and,
for comparison, a linear probe are trained with the same recipe; the adapter file is reloaded,
merged into the vanilla architecture and checked against the unmerged model on the test
images; base and merged models are timed interleaved.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from repadapter.errors import RepAdapterError
from repadapter.families.factory import IN_HOUSE_VIT, create_base
from repadapter.training.config import TrainConfig
from repadapter.training.data.lists import ImageListDataset
from repadapter.training.data.transforms import eval_transform, preprocessing
from repadapter.training.data.vtab import load_vtab_task
from repadapter.training.distributed import DistContext
from repadapter.training.protocol import run_task
from repadapter.tuner.adapter_files import load_adapter
from repadapter.tuner.merge import merge
from repadapter_lab.benchmarks.latency import measure_latency
from repadapter_lab.benchmarks.support import TOL
from repadapter_lab.offline.suite import DEFAULT_SIZES, build_suite


@dataclass(frozen=True)
class DemoSettings:
    """Everything the main job uses; the defaults finish in a few minutes on 2 CPU cores."""

    model: str = IN_HOUSE_VIT
    task: str = "clevr_count"
    data_root: str = "data/offline"
    train_images: int = DEFAULT_SIZES["train"]
    val_images: int = DEFAULT_SIZES["val"]
    test_images: int = DEFAULT_SIZES["test"]
    epochs: int = 8
    lr: float = 1e-3
    batch_size: int = 64
    placement: str = "block"
    dim: int = 8
    groups: int = 2
    scale: float = 1.0
    latency_rounds: int = 100
    seed: int = 0


def _recipe(settings: DemoSettings, method: str) -> TrainConfig:
    return TrainConfig(
        method=method,
        model=settings.model,
        placement=settings.placement,
        dim=settings.dim,
        groups=settings.groups,
        scale=str(settings.scale),
        epochs=settings.epochs,
        warmup_epochs=0,
        lr=settings.lr,
        batch_size=settings.batch_size,
        selection="none",
        workers=0,
        seed=settings.seed,
        device="cpu",
    )


def run_demo(settings: DemoSettings, log: Any = print) -> dict[str, Any]:
    """Run the main job and return its measurements."""
    sizes = {"train": settings.train_images, "val": settings.val_images, "test": settings.test_images}
    _recipe(settings, "repadapter")  # a bad number is refused before anything is built
    if settings.latency_rounds < 1 or min(sizes.values()) < 1:
        raise RepAdapterError("--latency-rounds and the image counts must be positive")
    log(f"[1/5] offline task {settings.task} ({sizes}) in {settings.data_root}")
    build_suite(
        settings.data_root, [settings.task], sizes, seed=0, progress=False, log=lambda m: log("  " + m)
    )
    task = load_vtab_task(Path(settings.data_root) / settings.task)
    cpu = DistContext(0, 1, torch.device("cpu"))
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        for step, method in ((2, "repadapter"), (3, "linear")):
            log(f"[{step}/5] train {method} on {task.name}: {settings.epochs} epochs on train+val, test once")
            summaries[method] = run_task(task, _recipe(settings, method), Path(tmp) / method, cpu)
            log(f"  test accuracy {100 * summaries[method]['test_score']:.1f}%")
        adapter_file = Path(tmp) / "repadapter" / "adapter.safetensors"
        file_bytes = adapter_file.stat().st_size

        log("[4/5] reload the adapter file, merge into the vanilla model, compare on the test images")
        cfg = _recipe(settings, "repadapter")
        base = create_base(cfg.model, task.num_classes, pretrained=True).eval()
        unmerged = load_adapter(create_base(cfg.model, task.num_classes, True), adapter_file).eval()
        merged = merge(load_adapter(create_base(cfg.model, task.num_classes, True), adapter_file)).eval()
    vanilla = create_base(cfg.model, task.num_classes, pretrained=False).eval()
    vanilla.load_state_dict(merged.state_dict(), strict=True)
    prep = preprocessing(vanilla)
    loader = DataLoader(ImageListDataset(task.split("test"), eval_transform(prep)), batch_size=250)
    max_diff, max_logit, correct, total = 0.0, 0.0, 0, 0
    with torch.inference_mode():
        for images, labels in loader:
            a, b = unmerged(images), vanilla(images)
            max_diff = max(max_diff, (a - b).abs().max().item())
            max_logit = max(max_logit, a.abs().max().item())
            correct += (b.argmax(-1) == labels).sum().item()
            total += len(labels)
    # float32 rounding grows with the values: the library's bound is TOL x max(1, max |logit|).
    bound = TOL * max(1.0, max_logit)
    exact = f"max |logit| {max_logit:.1f}, bound {bound:.1e}: {'within' if max_diff <= bound else 'OVER'}"
    log(
        f"  merged vs unmerged: max |delta logits| = {max_diff:.2e} ({exact}); "
        f"merged test accuracy {100 * correct / total:.1f}%"
    )

    log(
        f"[5/5] latency at batch 1, {torch.get_num_threads()} threads, "
        f"{settings.latency_rounds} interleaved rounds"
    )
    one = next(iter(loader))[0][:1]
    latency = measure_latency(
        {"base": base, "merged": vanilla, "unmerged": unmerged}, one, settings.latency_rounds
    )
    ratios = {name: stats.median / latency["base"].median for name, stats in latency.items()}
    counts = {
        name: sum(p.numel() for p in m.parameters()) for name, m in (("base", base), ("merged", vanilla))
    }
    rep, lin = summaries["repadapter"], summaries["linear"]
    report = [
        f"RepAdapter ({settings.placement}, dim {settings.dim}, groups {settings.groups}, "
        f"scale {settings.scale:g}) on {task.name}: test accuracy {100 * rep['test_score']:.1f}% "
        f"vs linear probe {100 * lin['test_score']:.1f}%",
        f"trained parameters: {rep['trained_params']:,} ({rep['adapter_params']:,} adapter + head), "
        f"{rep['trained_percent_of_backbone']:.2f}% of the backbone; linear probe {lin['trained_params']:,}",
        f"adapter file: {file_bytes:,} bytes; merged model: {counts['merged']:,} parameters "
        f"(base: {counts['base']:,})",
        f"merged vs unmerged: max |delta logits| {max_diff:.2e} over {total} test images ({exact})",
        "latency (median): "
        + ", ".join(f"{n} {s.median * 1e3:.2f} ms ({ratios[n]:.2f}x)" for n, s in latency.items()),
    ]
    log("\n".join(["", "REPORT", *report]))
    return {
        "settings": asdict(settings),
        "task": {"name": task.name, "group": task.group, "classes": task.num_classes, "sizes": sizes},
        "test_accuracy": {
            "repadapter": rep["test_score"],
            "linear": lin["test_score"],
            "merged": correct / total,
        },
        "trained_parameters": {
            "repadapter": rep["trained_params"],
            "adapter": rep["adapter_params"],
            "linear": lin["trained_params"],
        },
        "parameters": counts,
        "adapter_file_bytes": file_bytes,
        "max_abs_logit_diff": max_diff,
        "max_abs_logit": max_logit,
        "merge_bound": bound,
        "train_seconds": {"repadapter": rep["wall_seconds"], "linear": lin["wall_seconds"]},
        "latency_batch1": {n: s.as_dict() for n, s in latency.items()},
        "latency_ratio_to_base": ratios,
    }
