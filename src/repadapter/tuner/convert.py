"""Checkpoints of the official RepAdapter code (github luogen1996/RepAdapter) as adapter files.

The official training script saves ``torch.save`` of a dict of tensors: every parameter whose
name holds ``adapter`` or ``head``. For a timm ViT that is, per block ``N``,
``blocks.N.adapter_attn.conv_A.weight`` (r, d, 1) and ``.bias`` (r): a dense 1x1 Conv1d, the
down projection; ``blocks.N.adapter_attn.conv_B.weight`` (d, r/g, 1) and ``.bias`` (d): a 1x1
Conv1d with g groups, the up projection; the same under ``adapter_mlp`` for the "repblock"
placement; and ``head.weight`` / ``head.bias``. Its forward on the token dimension is
``x + s * conv_B(dropout(conv_A(x)))``, applied to ``norm1(x)`` before attention and to
``norm2(x)`` before the MLP, which is where our adapters sit on a timm ``Block`` (the inputs of
``attn`` and ``mlp``). The scale s is not in the checkpoint: it lives in the official per-task
YAML configs (`repadapter.training.data.vtab.PAPER_SCALES`).

The official block forward has no LayerScale (``ls1`` / ``ls2``), so on a model with LayerScale
no adapter file reproduces it; such models are refused.

The file is read with ``torch.load(weights_only=True)``, which runs no code from it.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import cast

import torch
from timm.models.vision_transformer import Block
from torch import nn

from repadapter.config import RepAdapterConfig
from repadapter.errors import RepAdapterError
from repadapter.families import family_of
from repadapter.families.factory import create
from repadapter.tuner.adapter_files import save_adapter
from repadapter.tuner.inject import inject

_ADAPTER_KEY = re.compile(r"blocks\.(\d+)\.adapter_(attn|mlp)\.conv_([AB])\.(weight|bias)")
_HEAD_KEYS = ("head.weight", "head.bias")
# official module name -> our host module inside a block; official conv -> our layer
_HOSTS = {"attn": "attn", "mlp": "mlp"}
_LAYERS = {"A": "down", "B": "up"}


def read_official_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of an official checkpoint, read without running any code from the file."""
    path = Path(path)
    if not path.is_file():
        raise RepAdapterError(f"official checkpoint {path} does not exist (or is not a file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise RepAdapterError(
            f"{path} holds Python objects other than tensors, which repadapter will not unpickle "
            f"(that could run code from the file): {first[:200]}. The official code saves a plain "
            "dict of tensors; re-save yours as one (torch.save({name: tensor}))"
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise RepAdapterError(f"{path} is not a readable torch.save file: {err}") from err
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise RepAdapterError(
            f"{path} is not a dict of named tensors (it holds a {type(state).__name__}); the official "
            "code saves {parameter name: tensor}"
        )
    return state


def _layout(state: dict[str, torch.Tensor], path: object) -> tuple[int, int, int, int, str]:
    """Depth, width d, bottleneck r, groups g and placement of an official checkpoint."""
    unknown = [k for k in state if not _ADAPTER_KEY.fullmatch(k) and k not in _HEAD_KEYS]
    if unknown:
        raise RepAdapterError(
            f"{path} has keys the official ViT layout does not ({', '.join(unknown[:4])}); expected only "
            "blocks.N.adapter_{attn,mlp}.conv_{A,B}.{weight,bias} and head.{weight,bias} "
            "(Swin, ConvNeXt and the video / segmentation code's checkpoints are not supported)"
        )
    missing_head = [k for k in _HEAD_KEYS if k not in state]
    if missing_head:
        raise RepAdapterError(f"{path} has no {', '.join(missing_head)}: the classifier the adapters go with")
    found = {m.groups() for k in state if (m := _ADAPTER_KEY.fullmatch(k))}
    blocks = sorted({int(b) for b, _, _, _ in found})
    if not blocks:
        raise RepAdapterError(f"{path} holds no adapter tensors (blocks.N.adapter_attn.conv_A.weight, ...)")
    modules = {m for _, m, _, _ in found}
    placement = "block" if "mlp" in modules else "attn"
    expected = {
        (str(b), m, c, p)
        for b in range(blocks[-1] + 1)
        for m in modules
        for c in "AB"
        for p in ("weight", "bias")
    }
    if found != expected:
        lacking = sorted(f"blocks.{b}.adapter_{m}.conv_{c}.{p}" for b, m, c, p in expected - found)
        raise RepAdapterError(f"{path} lacks {', '.join(lacking[:4])}: an incomplete official checkpoint")
    down = state["blocks.0.adapter_attn.conv_A.weight"]
    up = state["blocks.0.adapter_attn.conv_B.weight"]
    if down.dim() != 3 or up.dim() != 3 or down.shape[2] != 1 or up.shape[2] != 1:
        raise RepAdapterError(
            f"{path}: conv_A / conv_B weights have shapes {tuple(down.shape)} / {tuple(up.shape)}; "
            "the official 1x1 Conv1d weights are (r, d, 1) and (d, r/g, 1)"
        )
    rank, width = down.shape[:2]
    if up.shape[0] != width or rank % up.shape[1]:
        raise RepAdapterError(
            f"{path}: conv_B weight {tuple(up.shape)} does not fit conv_A weight {tuple(down.shape)}"
        )
    groups = rank // up.shape[1]
    shapes = {"A.weight": (rank, width, 1), "A.bias": (rank,), "B.weight": (width, rank // groups, 1)}
    shapes["B.bias"] = (width,)
    for key, tensor in state.items():
        m = _ADAPTER_KEY.fullmatch(key)
        if m and tuple(tensor.shape) != shapes[f"{m.group(3)}.{m.group(4)}"]:
            raise RepAdapterError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, the other adapters "
                f"{shapes[f'{m.group(3)}.{m.group(4)}']}"
            )
    return blocks[-1] + 1, width, rank, groups, placement


def _our_name(key: str, groups: int, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    """Our adapter-file name and layout of one official tensor."""
    m = _ADAPTER_KEY.fullmatch(key)
    if m is None:
        return key, tensor
    block, module, conv, part = m.groups()
    name = f"blocks.{block}.{_HOSTS[module]}.repadapter.{_LAYERS[conv]}.{part}"
    if part == "bias":
        return name, tensor
    if conv == "A":  # (r, d, 1) -> nn.Linear (r, d)
        return name, tensor[..., 0]
    # grouped conv (d, r/g, 1): output channels [k*d/g, (k+1)*d/g) read input group k,
    # which is GroupedLinear's (g, d/g, r/g)
    width, per_group = tensor.shape[:2]
    return name, tensor[..., 0].reshape(groups, width // groups, per_group)


def _check_model(model: nn.Module, model_name: str, depth: int, width: int) -> None:
    """Refuse a base model the official forward does not describe."""
    if family_of(model).name != "timm_vit":
        raise RepAdapterError(
            f"{model_name} is not a timm VisionTransformer; official checkpoints convert onto timm ViTs only"
        )
    blocks = list(cast(nn.Sequential, model.blocks))
    if len(blocks) != depth or model.embed_dim != width:
        raise RepAdapterError(
            f"the checkpoint holds adapters for {depth} blocks of width {width}, {model_name} has "
            f"{len(blocks)} blocks of width {model.embed_dim}; give the --model it was trained on "
            "(the official code trains vit_base_patch16_224_in21k)"
        )
    for i, block in enumerate(blocks):
        if type(block) is not Block:
            raise RepAdapterError(
                f"{model_name}: blocks.{i} is a {type(block).__qualname__}; the official forward "
                "replaces timm's pre-norm Block forward only"
            )
        if not (isinstance(block.ls1, nn.Identity) and isinstance(block.ls2, nn.Identity)):
            raise RepAdapterError(
                f"{model_name} has LayerScale (blocks.{i}.ls1 / ls2), which the official block forward "
                "leaves out, so no adapter file reproduces the official model on it; convert onto a "
                "ViT without LayerScale (e.g. vit_base_patch16_224)"
            )


def convert_official(
    checkpoint: str | os.PathLike[str],
    model_name: str,
    scale: float,
    out: str | os.PathLike[str],
    placement: str | None = None,
) -> tuple[Path, RepAdapterConfig, int]:
    """Write the official checkpoint at ``checkpoint`` as our adapter file ``out`` for timm
    ``model_name`` at scale ``scale``; returns the file, its config and its class count.

    ``placement`` ("attn" for the official repattn, "block" for repblock) is read from the
    checkpoint; when given it must agree.
    """
    state = read_official_checkpoint(checkpoint)
    depth, width, rank, groups, found = _layout(state, checkpoint)
    if placement is not None and placement != found:
        raise RepAdapterError(
            f"--placement {placement} was given but {checkpoint} holds the official "
            f"{'repblock' if found == 'block' else 'repattn'} layout (placement {found})"
        )
    num_classes = state["head.weight"].shape[0]
    model = create(model_name, num_classes=num_classes)
    _check_model(model, model_name, depth, width)
    config = RepAdapterConfig(dim=rank, groups=groups, scale=scale, dropout=0.1, placement=found)
    inject(model, config)
    params = dict(model.named_parameters())
    written = set()
    with torch.no_grad():
        for key, tensor in state.items():
            name, value = _our_name(key, groups, tensor)
            if name not in params:
                raise RepAdapterError(
                    f"{model_name} has no {name} for {key} (its adapter there has no bias: the model's "
                    "projections and norm lack biases); convert onto the model it was trained on"
                )
            if params[name].shape != value.shape:
                raise RepAdapterError(
                    f"{key} has shape {tuple(tensor.shape)}, which does not fit {name} "
                    f"{tuple(params[name].shape)} in {model_name}"
                )
            params[name].copy_(value)
            written.add(name)
    unfilled = sorted(n for n, p in params.items() if p.requires_grad and n not in written)
    if unfilled:
        raise RepAdapterError(f"{checkpoint} has nothing for {', '.join(unfilled[:4])} of {model_name}")
    return save_adapter(model, out), config, num_classes
