"""How long a deployed model takes to change task: unmerge one adapter file, merge another."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from repadapter.config import RepAdapterConfig
from repadapter.families.factory import create
from repadapter.multitask import switch_adapter
from repadapter.tuner.adapter_files import load_adapter, save_adapter
from repadapter.tuner.inject import inject
from repadapter.tuner.inspection import perturb_adapters
from repadapter.tuner.merge import merge, unload, unmerge


def measure_switch(model_name: str, classes: tuple[int, int] = (100, 47), rounds: int = 6) -> dict[str, Any]:
    """Alternate a merged ``model_name`` between two random tasks ``rounds`` times.

    Returns the switch times and, after the last switch, the max |logit difference| to the
    same task's unmerged model and the worst relative drift of the backbone weights.
    """
    torch.manual_seed(0)
    model: Any = create(
        model_name, num_classes=classes[0]
    ).eval()  # a timm model: reset_classifier, patch_embed
    base = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head")}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, num_classes in enumerate(classes):
            model.reset_classifier(num_classes)
            inject(model, RepAdapterConfig())
            perturb_adapters(model, std=0.02, seed=i)
            files.append(save_adapter(model, Path(tmp) / f"task{i}.safetensors"))
            unload(model)
        model.reset_classifier(classes[0])
        merge(load_adapter(model, files[0]), inplace=True)
        times, current = [], 0
        for _ in range(rounds):
            began = time.perf_counter()
            switch_adapter(model, files[current], files[1 - current])
            times.append(time.perf_counter() - began)
            current = 1 - current
        reference = load_adapter(create(model_name, num_classes=classes[current]).eval(), files[current])
        reference.load_state_dict({**reference.state_dict(), **base}, strict=True)
        x = torch.randn(2, 3, *model.patch_embed.img_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            diff = (model(x) - reference(x)).abs().max().item()
        restored = unload(unmerge(model, files[current], inplace=True)).state_dict()
    drift = max(((restored[k] - v).norm() / v.norm()).item() for k, v in base.items() if v.norm() > 0)
    return {
        "model": model_name,
        "rounds": rounds,
        "switch_seconds": times,
        "median_seconds": statistics.median(times),
        "max_abs_logit_diff_after_switching": diff,
        "max_rel_backbone_drift_after_switching": drift,
        "torch_threads": torch.get_num_threads(),
    }
