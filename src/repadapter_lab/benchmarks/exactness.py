"""How exact merging is on a given architecture: inject random non-zero adapters, merge,
compare outputs, unmerge, compare weights.

Merged weights are stored in the model's dtype, so undoing a merge recovers the base weights
only up to that rounding times the condition number of ``M = I + s*U@D``: about
``cond(M) * 2^-24`` in float32. Each result reports the worst ``cond(M)`` beside its error.
"""

from __future__ import annotations

import ast
import copy
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from repadapter.config import RepAdapterConfig
from repadapter.families.factory import create
from repadapter.layers.adapter import RepAdapter
from repadapter.tuner.adapter_files import save_adapter
from repadapter.tuner.inject import inject
from repadapter.tuner.inspection import count_parameters, perturb_adapters
from repadapter.tuner.merge import merge, unmerge

# The ViTs the core is checked on: plain, no qkv bias, LayerScale (DeiT-3), and ViT-B at 224.
DEFAULT_MODELS = (
    "vit_tiny_patch16_224",
    "vit_small_patch16_224:qkv_bias=False",
    "deit3_small_patch16_224",
    "vit_base_patch16_224",
)


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value,key=value"`` -> (name, kwargs); values are Python literals."""
    name, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"model spec {spec!r}: {item!r} is not key=value")
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"model spec {spec!r}: {value!r} is not a Python literal") from err
    return name, kwargs


@dataclass(frozen=True)
class Exactness:
    """Worst merge and unmerge errors of one architecture and config."""

    model: str
    placement: str
    groups: int
    scale: float
    max_abs_logit_diff: float
    max_rel_weight_error: float
    max_condition: float
    adapter_params: int

    @property
    def unmerge_error_bound(self) -> float:
        """What float32 storage of merged weights allows: about cond(M) * 2^-24."""
        return self.max_condition * 2.0**-24

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "unmerge_error_bound": self.unmerge_error_bound}


def check_exactness(
    spec: str, config: RepAdapterConfig, batch: int = 2, std: float = 0.05, seed: int = 0
) -> Exactness:
    """Merge and unmerge one model with random adapters (and random non-zero base biases)."""
    name, kwargs = parse_model_spec(spec)
    torch.manual_seed(seed)
    model = create(name, **kwargs).eval()
    with torch.no_grad():  # timm starts biases at zero; shift them so bias folding is exercised
        for param_name, param in model.named_parameters():
            if param_name.endswith("bias"):
                param.normal_(0, 0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inject(model, config)
    perturb_adapters(model, std=std, seed=seed)
    condition = max(
        torch.linalg.cond(m.affine().matrix).item() for m in model.modules() if isinstance(m, RepAdapter)
    )
    before = copy.deepcopy(model.state_dict())
    size = cast(Any, model).patch_embed.img_size
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))
    merged = merge(model)
    with torch.no_grad():
        diff = (merged(x) - model(x)).abs().max().item()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_adapter(model, Path(tmp) / "adapter.safetensors")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            restored = unmerge(merged, path, inplace=True).state_dict()
    rel = max(
        ((restored[k].double() - v.double()).norm() / v.double().norm().clamp_min(1e-30)).item()
        for k, v in before.items()
        if v.is_floating_point() and v.norm() > 0
    )
    return Exactness(
        spec,
        config.placement,
        config.groups,
        config.scale,
        diff,
        rel,
        condition,
        count_parameters(model).adapter,
    )
