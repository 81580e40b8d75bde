"""Shared builders: real timm architectures (random weights), made non-trivial."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import SwiGLU
from torch import nn

# name -> (timm model name, kwargs). Depth is cut where the width alone is what matters.
VIT_MODELS: dict[str, tuple[str, dict]] = {
    "vit_tiny": ("vit_tiny_patch16_224", {}),
    "vit_small_no_qkv_bias": ("vit_small_patch16_224", {"qkv_bias": False}),
    "deit3_small_layerscale": ("deit3_small_patch16_224", {}),
    "vit_base_224": ("vit_base_patch16_224", {}),
    "clip_b32_prenorm": ("vit_base_patch32_clip_224", {"depth": 2}),
    "deit_tiny_distilled": ("deit_tiny_distilled_patch16_224", {"depth": 3}),
    "vit_res_post_norm": ("vit_base_patch16_rpn_224", {"depth": 2}),
    "swiglu_mlp": ("vit_tiny_patch16_224", {"depth": 2, "mlp_layer": SwiGLU}),
    "diff_attention": ("vit_tiny_patch16_224", {"depth": 2, "attn_layer": "diff"}),
    "siglip_map_pool": ("vit_base_patch16_siglip_224", {"depth": 2}),
    "large_patch14": ("vit_large_patch14_clip_224", {"depth": 1}),
}


def build_vit(key: str, num_classes: int = 10, seed: int = 0, **extra) -> nn.Module:
    """A timm ViT from VIT_MODELS in eval mode, with every base parameter nudged off its init.

    timm initialises biases to zero; nudging them makes bias folding and unmerging testable.
    """
    name, kwargs = VIT_MODELS[key]
    torch.manual_seed(seed)
    model = timm.create_model(name, num_classes=num_classes, **{**kwargs, **extra})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    return model.eval()


def vanilla_like(key: str, num_classes: int = 10, **extra) -> nn.Module:
    """The unmodified architecture of `build_vit(key)`, for strict state-dict loads."""
    name, kwargs = VIT_MODELS[key]
    return timm.create_model(name, num_classes=num_classes, **{**kwargs, **extra}).eval()


def input_for(
    model: nn.Module, batch: int = 2, seed: int = 1, size: tuple[int, int] | None = None
) -> torch.Tensor:
    size = size or tuple(model.patch_embed.img_size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=generator)


def relative_error(restored: torch.Tensor, original: torch.Tensor) -> float:
    return ((restored.double() - original.double()).norm() / original.double().norm()).item()


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory):
    """For command-line tests: a two-class VTAB task (``data``, a --data value) and adapter files
    for the packaged image and video models (``image``, ``video``), which eval, merge and export
    rebuild with their weights."""
    import repadapter as ra
    from repadapter.families.factory import create_base
    from tests.fixtures import IMAGE_MODEL, VIDEO_MODEL, make_vtab_task

    root = tmp_path_factory.mktemp("world")
    task = make_vtab_task(root, "eurosat", train=8, val=4, test=4)
    files = {}
    for kind, name, classes in (("image", IMAGE_MODEL, 2), ("video", VIDEO_MODEL, 3)):
        model = ra.perturb_adapters(ra.inject(create_base(name, classes)))
        files[kind] = ra.save_adapter(model, root / f"{kind}.safetensors")
    return {"root": root, "data": f"vtab:{task}", **files}
