"""VPT-Deep: ``--dim`` learned prompt tokens inserted after the class token at every block.

Each block sees its own prompts (the previous block's prompt outputs are dropped, as in VPT-Deep),
initialised uniform(-v, v) with v = sqrt(6 / (3 * patch area + width)). Attention then runs over
more tokens, which is VPT's inference cost: nothing folds away.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families import find_family
from repadapter.families.timm_vit import TIMM_VIT
from repadapter.training.config import TrainConfig
from repadapter.training.methods.base import Method, block_parts, train_only


class PromptedBlock(nn.Module):
    """A transformer block that runs with ``prompts`` inserted after the prefix tokens."""

    def __init__(self, base: nn.Module, count: int, width: int, prefix: int, bound: float, dropout: float):
        super().__init__()
        self.base, self.prefix = base, prefix
        self.prompts = nn.Parameter(torch.empty(count, width).uniform_(-bound, bound))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prompts = self.dropout(self.prompts).expand(x.shape[0], -1, -1).to(x.dtype)
        y = self.base(torch.cat([x[:, : self.prefix], prompts, x[:, self.prefix :]], dim=1))
        return torch.cat([y[:, : self.prefix], y[:, self.prefix + len(self.prompts) :]], dim=1)


def _vpt_deep(model: nn.Module, cfg: TrainConfig, scale: float) -> nn.Module:
    if find_family(model) is not TIMM_VIT:
        raise RepAdapterError(
            f"--method vpt-deep prompts timm VisionTransformer token sequences; a {type(model).__name__} "
            "has none: use --method repadapter, lora or ssf"
        )
    patch = cast(tuple[int, int], model.get_submodule("patch_embed").patch_size)
    width = cast(int, model.embed_dim)
    bound = math.sqrt(6.0 / (3 * patch[0] * patch[1] + width))
    prefix = cast(int, model.num_prefix_tokens)
    # Each block is the parent of an attention module the family puts adapters on.
    for block in [host.rpartition(".")[0] for host in block_parts(model)["attn"]]:
        model.set_submodule(
            block, PromptedBlock(model.get_submodule(block), cfg.dim, width, prefix, bound, cfg.dropout)
        )
    return train_only(model, lambda name: name.endswith(".prompts"))


VPT_DEEP = Method("vpt-deep", "VPT-Deep: --dim prompt tokens per block", _vpt_deep, False, None)
