"""The support matrix: every model family, placement, group count and input size, checked end to end.

Each case builds a small model of the family with random weights (biases, norms and BatchNorm
statistics moved off their initial values so every fold path is exercised), injects random
non-zero adapters, and checks, in float32 and eval mode: merged vs unmerged outputs at every
input size, a strict ``load_state_dict`` of the merged model into an unmodified one, equal
parameter counts, that unmerging restores the base weights, and that a saved adapter file loads
back into a fresh model. Placements that do not merge are checked to refuse `merge` clearly.
The test suite (tests/families/test_support_matrix.py) and ``repadapter support-table`` run
this same matrix.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from repadapter.config import RepAdapterConfig
from repadapter.errors import RepAdapterError
from repadapter.families import family_of
from repadapter.tuner.adapter_files import load_adapter, save_adapter
from repadapter.tuner.inject import inject
from repadapter.tuner.inspection import perturb_adapters
from repadapter.tuner.merge import merge, unmerge

Size = tuple[int, int]
# Merged vs unmerged outputs, max |Δ| in float32: 1e-5, times the largest |output| where that
# exceeds 1 (rounding differences grow with the values; deep random CNNs reach |logits| ~ 20).
TOL = 1e-5
UNMERGE_TOL = 1e-6  # restored vs base weights, relative (float32 storage of merged weights)


def nudge(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter and BatchNorm statistic off its init; returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.02)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                mean, var = module.running_mean, cast(torch.Tensor, module.running_var)
                mean.copy_(torch.randn(mean.shape, generator=generator) * 0.1)
                var.copy_(torch.rand(var.shape, generator=generator) * 0.2 + 0.9)
    return model.eval()


@dataclass(frozen=True)
class Case:
    """One model of a family and how to run it.

    ``build(size)`` returns a fresh model with the same weights every call; when
    ``dynamic``, one model takes every size in ``sizes``, otherwise one is built per size.
    """

    family: str
    model: str
    build: Callable[[Size], nn.Module]
    placements: tuple[str, ...]
    sizes: tuple[Size, ...]
    dynamic: bool = True
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] = lambda model, x: model(x)
    target_modules: tuple[str, ...] = ()
    notes: str = ""
    groups: tuple[int, ...] = field(default=(1, 2))

    @property
    def id(self) -> str:
        return self.model


def _timm(name: str, size: Size | None = None, **kwargs: Any) -> nn.Module:
    import timm

    torch.manual_seed(0)
    if size is not None:
        kwargs["img_size"] = size
    return nudge(timm.create_model(name, pretrained=False, num_classes=5, **kwargs))


def _hf(kind: str, size: Size, **extra: Any) -> nn.Module:
    import transformers

    cls, config_cls = {
        "vit": (transformers.ViTForImageClassification, transformers.ViTConfig),
        "dinov2": (transformers.Dinov2Model, transformers.Dinov2Config),
        "clip": (transformers.CLIPVisionModel, transformers.CLIPVisionConfig),
    }[kind]
    config = config_cls(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=5,
        **extra,
    )
    torch.manual_seed(0)
    return nudge(cls(config))


def _hf_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(pixel_values=x, interpolate_pos_encoding=True)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _open_clip(size: Size) -> nn.Module:
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    tower = VisionTransformer(
        image_size=size[0], patch_size=8, width=32, layers=2, heads=2, mlp_ratio=2.0, output_dim=16
    )
    return nudge(tower)


def _mixed_net(size: Size) -> nn.Module:
    """A model of no family: a stem, a 1x1 conv, a padded 3x3 conv and a Linear head."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 8, 1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    return nudge(net)


SQUARE, ODD = (32, 32), (37, 45)
TINY_VIT: dict[str, Any] = {
    "img_size": 32,
    "patch_size": 8,
    "depth": 2,
    "dynamic_img_size": True,
    "dynamic_img_pad": True,
}
TINY_CONVNEXT: dict[str, Any] = {"depths": (1, 1, 1, 1), "dims": (16, 32, 32, 64)}
TINY_SWIN: dict[str, Any] = {
    "depths": (1, 1, 1, 1),
    "embed_dim": 16,
    "num_heads": (1, 1, 2, 2),
    "window_size": 4,
}

CASES: tuple[Case, ...] = (
    Case(
        "timm ViT", "vit_tiny_patch16_224", lambda s: _timm("vit_tiny_patch16_224", **TINY_VIT),
        ("attn", "block"), (SQUARE, ODD), notes="depth 2, patch 8, dynamic_img_size and padding",
    ),
    Case(
        "timm CLIP ViT", "vit_base_patch16_clip_224",
        lambda s: _timm("vit_base_patch16_clip_224", depth=1, img_size=32, dynamic_img_size=True),
        ("attn", "block"), (SQUARE, (48, 64)), notes="depth 1, pre-norm CLIP blocks",
    ),
    Case(
        "timm Swin", "swin_tiny_patch4_window7_224",
        lambda s: _timm("swin_tiny_patch4_window7_224", s, **TINY_SWIN),
        ("attn", "block"), ((64, 64), (96, 96)), dynamic=False,
        notes="window 4; at 96 px the stage maps (24, 12, 6, 3) are padded to whole windows",
    ),
    Case(
        "timm ConvNeXt", "convnext_atto", lambda s: _timm("convnext_atto", **TINY_CONVNEXT),
        ("block", "io", "dwconv"), (SQUARE, ODD), notes="channels-last Linear MLP",
    ),
    Case(
        "timm ConvNeXt", "convnext_atto:conv_mlp=True",
        lambda s: _timm("convnext_atto", conv_mlp=True, **TINY_CONVNEXT),
        ("block", "io"), (SQUARE, ODD), notes="1x1-conv MLP (NCHW)",
    ),
    Case(
        "timm EfficientNet", "efficientnet_b0", lambda s: _timm("efficientnet_b0"),
        ("block",), (SQUARE, ODD), groups=(1, 4),
    ),
    Case(
        "timm EfficientNet", "tf_efficientnet_lite0", lambda s: _timm("tf_efficientnet_lite0"),
        ("block",), (SQUARE, ODD), groups=(1, 4), notes="TF 'same' padding",
    ),
    Case(
        "timm EfficientNet", "mobilenetv2_100", lambda s: _timm("mobilenetv2_100"),
        ("block",), (SQUARE, ODD), groups=(1, 4),
    ),
    Case(
        "timm ResNet", "resnet50", lambda s: _timm("resnet50"), ("block",), (SQUARE, ODD), groups=(1, 4),
    ),
    Case(
        "timm ResNet", "resnet18", lambda s: _timm("resnet18"), ("block",), (SQUARE, ODD), groups=(1, 4),
        notes="3x3 convolutions: bias-free adapters",
    ),
    Case(
        "HF ViT", "ViTForImageClassification", lambda s: _hf("vit", s), ("attn", "block"),
        (SQUARE, (48, 40)), forward=_hf_forward, notes="tiny config; interpolate_pos_encoding",
    ),
    Case(
        "HF DINOv2", "Dinov2Model", lambda s: _hf("dinov2", s, layerscale_value=0.5),
        ("attn", "block"), (SQUARE, (48, 40)), forward=_hf_forward, notes="LayerScale",
    ),
    Case(
        "HF DINOv2", "Dinov2Model:use_swiglu_ffn=True",
        lambda s: _hf("dinov2", s, use_swiglu_ffn=True), ("block",), (SQUARE,), forward=_hf_forward,
    ),
    Case(
        "HF CLIP vision", "CLIPVisionModel", lambda s: _hf("clip", s), ("attn", "block"),
        (SQUARE, (48, 48)), forward=_hf_forward,
    ),
    Case(
        "open_clip ViT", "open_clip VisionTransformer", _open_clip, ("attn", "block"), (SQUARE, (64, 64)),
        dynamic=False, notes="fused nn.MultiheadAttention in_proj",
    ),
    Case(
        "any model (target_modules)", "Sequential(conv, conv1x1, conv3x3, Linear)", _mixed_net, ("block",),
        (SQUARE, ODD), target_modules=("2", "4", "7"), notes="one adapter per named layer",
    ),
)  # fmt: skip


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _adapted(case: Case, size: Size, config: RepAdapterConfig) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bias-free sites warn; the table records them
        return perturb_adapters(inject(case.build(size), config), std=0.05, seed=1).eval()


def check(case: Case, placement: str, groups: int) -> dict[str, Any]:
    """Every check of one case, placement and group count, over all of the case's sizes."""
    config = RepAdapterConfig(dim=8, groups=groups, placement=placement, target_modules=case.target_modules)
    generator = torch.Generator().manual_seed(2)
    row: dict[str, Any] = {
        "family": case.family, "model": case.model, "placement": placement, "groups": groups,
        "sizes": [list(s) for s in case.sizes], "max_abs_diff": {}, "changed": {},
    }  # fmt: skip
    model: nn.Module | None = None
    for size in case.sizes:
        if model is None or not case.dynamic:
            model = _adapted(case, size, config)
            row["family_name"] = family_of(model).name if not case.target_modules else "generic"
            try:
                merged = merge(model)
            except RepAdapterError as err:
                row["mergeable"], row["merge_error"] = False, str(err)
                merged = None
            else:
                row["mergeable"] = True
        x = torch.randn(2, 3, *size, generator=generator)
        with torch.no_grad():
            out = case.forward(model, x)
            row["output_scale"] = max(row.get("output_scale", 0.0), out.abs().max().item())
            base = case.build(size)
            row["changed"][f"{size[0]}x{size[1]}"] = (case.forward(base, x) - out).abs().max().item()
            if merged is not None:
                diff = (case.forward(merged, x) - out).abs().max().item()
                row["max_abs_diff"][f"{size[0]}x{size[1]}"] = diff
    assert model is not None
    size = case.sizes[-1]
    with tempfile.TemporaryDirectory() as tmp:
        path = save_adapter(model, Path(tmp) / "adapter.safetensors")
        reloaded = load_adapter(case.build(size), path)
        row["reload_equal"] = all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True)
        )
        if merged is not None:
            vanilla = case.build(size)
            vanilla.load_state_dict(merged.state_dict(), strict=True)  # raises if not vanilla
            row["strict_load"] = True
            row["same_param_count"] = sum(p.numel() for p in merged.parameters()) == sum(
                p.numel() for p in vanilla.parameters()
            )
            before = model.state_dict()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                restored = unmerge(copy.deepcopy(merged), path, inplace=True).state_dict()
            row["unmerge_rel_error"] = max(
                _relative(restored[k], v) for k, v in before.items() if v.is_floating_point() and v.any()
            )
    row["max_abs_diff_all"] = max(row["max_abs_diff"].values(), default=None)
    return row


def matrix(cases: tuple[Case, ...] = CASES) -> list[tuple[Case, str, int]]:
    """Every (case, placement, groups) the support table covers."""
    return [(case, p, g) for case in cases for p in case.placements for g in case.groups]


def passed(row: dict[str, Any]) -> bool:
    """Whether a row meets every promise (a non-mergeable placement must refuse, clearly)."""
    changed = min(row["changed"].values()) > 1e-4
    if not row["mergeable"]:
        return changed and row["reload_equal"] and "placement" in row["merge_error"]
    return (
        changed
        and row["max_abs_diff_all"] <= TOL * max(1.0, row["output_scale"])
        and row["strict_load"]
        and row["same_param_count"]
        and row["unmerge_rel_error"] <= UNMERGE_TOL
        and row["reload_equal"]
    )


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README table: one line per family and model, merged-vs-unmerged worst case."""
    lines = [
        "| family | model checked | placements | mergeable | input sizes | groups "
        "| max \\|Δ\\| merged vs unmerged | max \\|output\\| |",
        "|---|---|---|---|---|---|---|---|",
    ]
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        seen.setdefault((row["family"], row["model"]), []).append(row)
    for (family, model), mine in seen.items():
        placements = list(dict.fromkeys(r["placement"] for r in mine))
        mergeable = ", ".join(
            f"`{p}` {'yes' if next(r for r in mine if r['placement'] == p)['mergeable'] else 'no'}"
            for p in placements
        )
        diffs = [r["max_abs_diff_all"] for r in mine if r["mergeable"]]
        sizes = ", ".join(f"{h}x{w}" for h, w in mine[0]["sizes"])
        groups = ", ".join(str(g) for g in dict.fromkeys(r["groups"] for r in mine))
        worst = f"{max(diffs):.1e}" if diffs else "n/a"
        ok = "" if all(passed(r) for r in mine) else " (FAILED)"
        lines.append(
            f"| {family} | `{model}` | {', '.join(f'`{p}`' for p in placements)} | {mergeable} | "
            f"{sizes} | {groups} | {worst}{ok} | {max(r['output_scale'] for r in mine):.2g} |"
        )
    return "\n".join(lines) + "\n"


def run(json_path: str, markdown_path: str | None) -> list[dict[str, Any]]:
    """Run the whole matrix, print progress, write the JSON (with provenance) and markdown."""
    from repadapter.provenance import provenance, write_result

    made_by = provenance()
    rows = []
    for case, placement, groups in matrix():
        row = check(case, placement, groups)
        row["passed"] = passed(row)
        rows.append(row)
        worst = row["max_abs_diff_all"]
        print(
            f"{case.model:40s} {placement:7s} g={groups}  max|Δ| "
            f"{'not mergeable' if worst is None else f'{worst:.2e}'}  {'ok' if row['passed'] else 'FAILED'}",
            flush=True,
        )
    table = markdown(rows)
    write_result(json_path, {"tolerance": TOL, "rows": rows, "markdown": table}, made_by)
    if markdown_path:
        Path(markdown_path).write_text(table)
    print(table)
    return rows
