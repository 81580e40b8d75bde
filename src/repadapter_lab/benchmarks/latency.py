"""Forward latency of several models on one input, timed round-robin in one process.

Each round times every model once, starting from a different one, so drift of the machine
(frequency, other load) lands on all of them alike and their ratios stay meaningful.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from timm.data import resolve_data_config
from torch import nn

from repadapter.files import atomic_write


@dataclass(frozen=True)
class LatencyStats:
    """Seconds per forward pass over the timed rounds."""

    median: float
    min: float
    max: float
    rounds: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def measure_latency(
    models: dict[str, nn.Module], inputs: torch.Tensor, rounds: int = 30, warmup: int = 3
) -> dict[str, LatencyStats]:
    """Time ``model(inputs)`` for every model, interleaved; CUDA work is synchronised."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}

    def sync() -> None:
        if inputs.is_cuda:
            torch.cuda.synchronize(inputs.device)

    with torch.inference_mode():
        for model in models.values():
            model.eval()
            for _ in range(warmup):
                model(inputs)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                sync()
                start = time.perf_counter()
                models[name](inputs)
                sync()
                times[name].append(time.perf_counter() - start)
    return {name: LatencyStats(statistics.median(t), min(t), max(t), len(t)) for name, t in times.items()}


# --- `repadapter bench latency`: base vs every method's deploy form --------------------------

# The models: ViT-B/16 at 224, the in-house ViT, Swin-T and ConvNeXt-T.
LATENCY_MODELS = (
    "vit_base_patch16_224",
    "vit_tiny6_patch4_32",
    "swin_tiny_patch4_window7_224",
    "convnext_tiny",
)
# Methods that add modules; the others (linear, full, bitfit) deploy as the base model itself.
TIMED_METHODS = ("repadapter", "lora", "ssf", "fact-tt", "adapter", "adaptformer", "vpt-deep")


def deploy_forms(
    base: nn.Module, methods: Sequence[str], dim: int = 8
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """``base`` and each method's inference form on a copy of it, trained tensors made random and
    non-zero: merged where the method merges (RepAdapter also unmerged), as trained otherwise.
    Methods that do not apply to the model are returned with the reason instead."""
    from repadapter.errors import RepAdapterError
    from repadapter.training.config import TrainConfig
    from repadapter.training.methods import deploy, method, perturb_trained

    forms: dict[str, nn.Module] = {"base": base.eval()}
    skipped: dict[str, str] = {}
    for name in methods:
        chosen, cfg = method(name), TrainConfig(method=name, dim=dim, dropout=0.0)
        try:
            trained = perturb_trained(chosen.prepare(copy.deepcopy(base), cfg, 1.0)).eval()
        except RepAdapterError as err:
            skipped[name] = str(err)
            continue
        if chosen.mergeable:
            forms[f"{name} merged"] = deploy(trained, name).eval()
            if name == "repadapter":
                forms[f"{name} unmerged"] = trained
        else:
            forms[name] = trained
    return forms, skipped


def forward_gflops(model: nn.Module, inputs: torch.Tensor) -> float:
    """GFLOPs of one forward pass, by torch's FLOP counter (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(inputs)
    return counter.get_total_flops() / 1e9


def rounds_for(batch: int, rounds: int) -> int:
    """Fewer rounds for big batches (each is longer and less noisy): ``rounds`` at batch 1."""
    return max(3, rounds // batch)


def run_latency(
    models: Sequence[str],
    batches: Sequence[int],
    rounds: int,
    methods: Sequence[str] = TIMED_METHODS,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every model: parameters, GFLOPs at batch 1, and latency per batch size of the base model and
    each method's deploy form, timed interleaved, with ratios to the base's median."""
    from repadapter.families.factory import create

    results: dict[str, Any] = {}
    for spec in models:
        torch.manual_seed(0)
        base = create(spec, pretrained=False, num_classes=100)
        forms, skipped = deploy_forms(base, methods)
        size = cast(tuple[int, int, int], tuple(resolve_data_config({}, model=base)["input_size"]))
        one = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
        row: dict[str, Any] = {
            "input_size": list(size),
            "skipped": skipped,
            "forms": {
                name: {"params": sum(p.numel() for p in m.parameters()), "gflops": forward_gflops(m, one)}
                for name, m in forms.items()
            },
        }
        for batch in batches:
            x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(batch))
            n = rounds_for(batch, rounds)
            log(f"{spec}: batch {batch}, {len(forms)} models, {n} interleaved rounds")
            stats = measure_latency(forms, x, rounds=n, warmup=1 if batch > 8 else 3)
            for name, s in stats.items():
                row["forms"][name].setdefault("latency", {})[str(batch)] = s.as_dict()
                ratio = s.median / stats["base"].median
                row["forms"][name].setdefault("ratio_to_base", {})[str(batch)] = ratio
        results[spec] = row
    return {"threads": torch.get_num_threads(), "batches": list(batches), "models": results}


def render_latency(result: dict[str, Any]) -> str:
    """One table per model: each form's parameters, GFLOPs and latency ratio at every batch size."""
    lines = []
    batches = result["batches"]
    for spec, row in result["models"].items():
        lines += [
            f"### {spec} ({'x'.join(map(str, row['input_size']))}, {result['threads']} CPU threads)",
            "",
        ]
        head = ["model", "params (M)", "GFLOPs"]
        head += [f"batch {b}: ms (x base)" for b in batches]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, form in row["forms"].items():
            cells = [name, f"{form['params'] / 1e6:.2f}", f"{form['gflops']:.2f}"]
            for b in batches:
                ms = form["latency"][str(b)]["median"] * 1e3
                cells.append(f"{ms:.1f} ({form['ratio_to_base'][str(b)]:.3f})")
            lines.append("| " + " | ".join(cells) + " |")
        if row["skipped"]:
            lines.append("")
            lines += [f"Not applicable: {m}: {why}" for m, why in row["skipped"].items()]
        lines.append("")
    lines.append(
        "Median latency over interleaved rounds; ratio = median / the base model's median, same run."
    )
    return "\n".join(lines) + "\n"


def plot_latency(result: dict[str, Any], path: Path) -> None:
    """Bar chart of latency ratios to the base: one panel per model, one bar group per form."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = list(result["models"])
    fig, axes = plt.subplots(len(specs), 1, figsize=(9, 3.2 * len(specs)), squeeze=False)
    for ax, spec in zip(axes[:, 0], specs, strict=True):
        forms = result["models"][spec]["forms"]
        names = [n for n in forms if n != "base"]
        width = 0.8 / len(result["batches"])
        for i, b in enumerate(result["batches"]):
            ratios = [forms[n]["ratio_to_base"][str(b)] for n in names]
            ax.bar([k + i * width for k in range(len(names))], ratios, width, label=f"batch {b}")
        ax.axhline(1.0, color="black", linewidth=0.8)
        every = [forms[n]["ratio_to_base"][str(b)] for n in names for b in result["batches"]]
        ax.set_ylim(min(0.95, min(every) - 0.02), max(1.05, max(every) + 0.02))  # the differences, not 0..1
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(names))], names, rotation=20, ha="right")
        ax.set_ylabel("latency / base")
        ax.set_title(spec)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
