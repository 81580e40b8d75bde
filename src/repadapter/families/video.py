"""Video backbones: Hugging Face `VideoMAEForVideoClassification`, built from a config here or
loaded from a checkpoint folder, with timm-like ``pretrained_cfg`` so the rest of repadapter
(linear probing, adapter files' base model name) treats them like timm models.

- ``videomae_tiny6_patch4_32``: a VideoMAE of the in-house image ViT's shape (width 192,
  6 layers, 3 heads, MLP 768, 32 px in 4 px patches, tubelets of 2 frames, 8 frames, q/v bias,
  mean pooling). With ``pretrained`` (the ``.fmnist`` tag, timm's convention: the bare name
  with ``pretrained=True`` means the default tag) its weights are **inflated** from the
  packaged ``vit_tiny6_patch4_32.fmnist``:

  * patch embedding: the 2-D kernel is spread over the tubelet's time steps and divided by
    the tubelet size, so a static clip embeds exactly like the image;
  * q, k, v: split from timm's fused ``qkv``. VideoMAE's ``key`` has no bias, and dropping
    k's bias is exact: ``q . (k + b_k) = q . k + q . b_k``, and ``q . b_k`` is the same for
    every key of one query, so the softmax over keys does not change;
  * attention ``proj``, ``fc1``, ``fc2``, both block norms: copied; timm's final ``norm`` becomes
    ``fc_norm`` (applied after mean pooling instead of before the class token is read);
  * the classifier: kept when ``num_classes`` is 10 (Fashion-MNIST's), new otherwise, as timm does.

  What cannot transfer: the learned position embedding (VideoMAE adds a fixed sinusoid table,
  which is not a parameter, so a deployed model could not carry anything else) and the class
  token (VideoMAE mean-pools the patch tokens). ``fc_norm``'s epsilon is 1e-5 in VideoMAE,
  1e-6 in timm. The adapters and the head learn to bridge these differences.
- ``hf:<folder-or-hub-id>``: ``VideoMAEForVideoClassification.from_pretrained`` with a new
  classifier for ``num_classes`` (a hub id downloads; tests use a ``save_pretrained`` folder).

VideoMAE has no stochastic depth of its own; ``drop_path`` adds it with forward hooks on each
layer's two residual branches (identity in eval mode, nothing in the state dict), so the model
stays the vanilla class.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.building import (
    CHECKPOINT_FIX,
    HF_PREFIX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    add_drop_path,
    hf_model_type,
    transformers_module,
)
from repadapter.families.timm_models import create
from repadapter.files import read_tensor_file, refuse_pickle, torch_load_safely

IN_HOUSE_VIDEO = "videomae_tiny6_patch4_32"
IN_HOUSE_TAGS = ("fmnist",)
IN_HOUSE_IMAGE = "vit_tiny6_patch4_32.fmnist"
IMAGE_CLASSES = 10  # the in-house image ViT's Fashion-MNIST head
HF_MODEL_TYPE = "videomae"  # the model_type of an hf: checkpoint this module builds
VIDEOMAE_LAYER = "transformers.models.videomae.modeling_videomae.VideoMAELayer"
VIDEOMAE_BRANCHES = ("attention", "output.dropout")  # each layer's residual branches, before the add

_IN_HOUSE_CONFIG: dict[str, Any] = {
    "image_size": 32,
    "patch_size": 4,
    "num_channels": 3,
    "num_frames": 8,
    "tubelet_size": 2,
    "hidden_size": 192,
    "num_hidden_layers": 6,
    "num_attention_heads": 3,
    "intermediate_size": 768,
    "hidden_act": "gelu",  # exact GELU, as timm's nn.GELU
    "layer_norm_eps": 1e-6,  # timm's ViT norms
    "qv_bias": True,
    "use_mean_pooling": True,
}


def is_video_model(name: str) -> bool:
    """Whether ``name`` is one of the video backbones `create_video_model` builds: the in-house
    VideoMAE, or an ``hf:`` checkpoint whose config says ``videomae`` (or whose config is not
    local yet: `repadapter.families.factory.create_base` reads it before it builds)."""
    if name.startswith(HF_PREFIX):
        return hf_model_type(name[len(HF_PREFIX) :]) in (None, HF_MODEL_TYPE)
    return name.split(".")[0] == IN_HOUSE_VIDEO


# --- inflation from the in-house image ViT ------------------------------------------------------


def inflate_vit_state(
    image_state: dict[str, torch.Tensor], tubelet_size: int, depth: int, keep_head: bool
) -> dict[str, torch.Tensor]:
    """A `VideoMAEForVideoClassification` state dict from a timm ViT's (see the module doc).

    ``keep_head`` carries timm's ``head`` over as ``classifier``. The class token and learned
    position embedding are left out: VideoMAE has neither.
    """
    try:
        conv = image_state["patch_embed.proj.weight"]
        out: dict[str, torch.Tensor] = {
            "videomae.embeddings.patch_embeddings.projection.weight": (
                conv.unsqueeze(2).repeat(1, 1, tubelet_size, 1, 1) / tubelet_size
            ),
            "videomae.embeddings.patch_embeddings.projection.bias": image_state["patch_embed.proj.bias"],
            "fc_norm.weight": image_state["norm.weight"],
            "fc_norm.bias": image_state["norm.bias"],
        }
        for i in range(depth):
            src, dst = f"blocks.{i}.", f"videomae.encoder.layer.{i}."
            q, k, v = image_state[f"{src}attn.qkv.weight"].chunk(3)
            q_bias, _k_bias, v_bias = image_state[f"{src}attn.qkv.bias"].chunk(3)
            attn = f"{dst}attention.attention."
            out |= {
                f"{attn}query.weight": q,
                f"{attn}query.bias": q_bias,
                f"{attn}key.weight": k,  # key.bias does not exist: dropping b_k is exact
                f"{attn}value.weight": v,
                f"{attn}value.bias": v_bias,
            }
            pairs = {
                "attention.output.dense": "attn.proj",
                "intermediate.dense": "mlp.fc1",
                "output.dense": "mlp.fc2",
                "layernorm_before": "norm1",
                "layernorm_after": "norm2",
            }
            for ours, theirs in pairs.items():
                for kind in ("weight", "bias"):
                    out[f"{dst}{ours}.{kind}"] = image_state[f"{src}{theirs}.{kind}"]
        if keep_head:
            out["classifier.weight"] = image_state["head.weight"]
            out["classifier.bias"] = image_state["head.bias"]
    except KeyError as err:
        raise RepAdapterError(
            f"the image ViT weights lack {err}: inflation needs a timm VisionTransformer state dict "
            f"of {depth} blocks with a fused qkv (like {IN_HOUSE_IMAGE})"
        ) from err
    return {name: tensor.detach().clone().contiguous() for name, tensor in out.items()}


def _read_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise RepAdapterError(f"base checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return read_tensor_file(path, "base checkpoint")
    state = torch_load_safely(path, CHECKPOINT_FIX)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RepAdapterError(f"{path} does not hold a state dict")
    return state


def _load_checkpoint(model: nn.Module, path: str | os.PathLike[str], config: Any, num_classes: int) -> None:
    """A timm image ViT checkpoint (inflated) or a VideoMAE state dict; a classifier of
    another size is dropped, as timm drops a head when it loads weights."""
    state = _read_state(path)
    if "blocks.0.attn.qkv.weight" in state:
        keep = state.get("head.weight") is not None and state["head.weight"].shape[0] == num_classes
        state = inflate_vit_state(state, config.tubelet_size, config.num_hidden_layers, keep)
    own = model.state_dict()
    for name in ("classifier.weight", "classifier.bias"):
        if name in state and name in own and state[name].shape != own[name].shape:
            del state[name]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise RepAdapterError(f"{path} does not fit {IN_HOUSE_VIDEO}: {err}") from err
    missing = [n for n in missing if not n.startswith("classifier.")]
    if missing or unexpected:
        raise RepAdapterError(
            f"{path} does not fit {IN_HOUSE_VIDEO}: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )


def _config_overrides(num_classes: int, img_size: int | None, num_frames: int | None) -> dict[str, Any]:
    """VideoMAEConfig settings for the run: its classes and, where given, frame size and frames."""
    overrides: dict[str, Any] = {"num_labels": num_classes}
    if img_size is not None:
        overrides["image_size"] = img_size
    if num_frames is not None:
        overrides["num_frames"] = num_frames
    return overrides


def _in_house(
    tag: str | None,
    num_classes: int,
    pretrained: bool,
    checkpoint: str | os.PathLike[str] | None,
    img_size: int | None,
    num_frames: int | None,
) -> nn.Module:
    transformers = transformers_module()
    if tag is not None and tag not in IN_HOUSE_TAGS:
        raise RepAdapterError(f"{IN_HOUSE_VIDEO} has weights {IN_HOUSE_TAGS}, not {tag!r}")
    settings = {**_IN_HOUSE_CONFIG, **_config_overrides(num_classes, img_size, num_frames)}
    if settings["image_size"] % settings["patch_size"]:
        raise RepAdapterError(f"img_size {settings['image_size']} is not a multiple of the patch size 4")
    if settings["num_frames"] % settings["tubelet_size"]:
        raise RepAdapterError(
            f"num_frames {settings['num_frames']} is not a multiple of the tubelet size 2; use an even number"
        )
    config = transformers.VideoMAEConfig(**settings)
    model = transformers.VideoMAEForVideoClassification(config)
    if checkpoint is not None:
        _load_checkpoint(model, checkpoint, config, num_classes)
    elif pretrained:
        image = create(IN_HOUSE_IMAGE, pretrained=True)
        state = inflate_vit_state(
            image.state_dict(), config.tubelet_size, config.num_hidden_layers, num_classes == IMAGE_CLASSES
        )
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all(n.startswith("classifier.") for n in missing), (missing, unexpected)
    loaded = pretrained or checkpoint is not None
    model.pretrained_cfg = {
        "architecture": IN_HOUSE_VIDEO,
        "tag": (tag or IN_HOUSE_TAGS[0]) if loaded else tag,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    }
    return model


def _from_hf(
    source: str,
    num_classes: int,
    pretrained: bool,
    checkpoint: str | os.PathLike[str] | None,
    img_size: int | None,
    num_frames: int | None,
) -> nn.Module:
    transformers = transformers_module()
    if not source:
        raise RepAdapterError("give hf:<folder or hub id>, e.g. hf:MCG-NJU/videomae-base-finetuned-kinetics")
    if checkpoint is not None:
        raise RepAdapterError(f"hf:{source} loads its own weights; leave checkpoint unset")
    overrides = _config_overrides(num_classes, img_size, num_frames)
    cls = transformers.VideoMAEForVideoClassification
    try:
        if pretrained:
            model = cls.from_pretrained(source, ignore_mismatched_sizes=True, **overrides)
        else:
            model = cls(transformers.VideoMAEConfig.from_pretrained(source, **overrides))
    except pickle.UnpicklingError as err:  # transformers reads .bin files with weights_only=True
        raise refuse_pickle(source, "Save it with save_pretrained(safe_serialization=True).") from err
    except OSError as err:
        raise RepAdapterError(
            f"cannot load a VideoMAE from {source!r} (a local save_pretrained folder or a hub id): {err}"
        ) from err
    if model.config.model_type != HF_MODEL_TYPE:
        raise RepAdapterError(f"{source} is a {model.config.model_type} model, not a VideoMAE")
    model.pretrained_cfg = {
        "architecture": f"{HF_PREFIX}{source}",
        "tag": None,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }
    return model


def create_video_model(
    name: str,
    num_classes: int,
    pretrained: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    drop_path: float = 0.0,
    img_size: int | None = None,
    num_frames: int | None = None,
) -> nn.Module:
    """A `VideoMAEForVideoClassification` for ``num_classes`` (see the module doc for names).

    ``checkpoint`` (in-house only) is a local file with a timm image-ViT state dict (inflated)
    or a VideoMAE one. ``img_size`` / ``num_frames`` build it for another input; the sinusoid
    position table is made for that size. The model gets ``pretrained_cfg`` (architecture, tag,
    input size, frames, mean, std, classifier) and ``num_classes``.
    """
    if num_classes < 1:
        raise RepAdapterError(f"num_classes must be positive for a video classifier, got {num_classes}")
    model: Any
    if name.startswith(HF_PREFIX):
        model = _from_hf(name[len(HF_PREFIX) :], num_classes, pretrained, checkpoint, img_size, num_frames)
    elif name.split(".")[0] == IN_HOUSE_VIDEO:
        tag = name.partition(".")[2]
        model = _in_house(tag or None, num_classes, pretrained, checkpoint, img_size, num_frames)
    else:
        raise RepAdapterError(
            f"unknown video model {name!r}; video models: {IN_HOUSE_VIDEO}, {IN_HOUSE_VIDEO}.fmnist, "
            "hf:<folder or hub id of a VideoMAE checkpoint>"
        )
    add_drop_path(model, drop_path, VIDEOMAE_LAYER, VIDEOMAE_BRANCHES)
    config = model.config
    size = config.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    model.pretrained_cfg = {
        **model.pretrained_cfg,
        "num_classes": num_classes,
        "input_size": (config.num_channels, height, width),
        "num_frames": config.num_frames,
        "tubelet_size": config.tubelet_size,
        "frame_sampling": "segment",  # TSN sampling, VideoMAE's for SSv2; the run's cfg may choose another
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "first_conv": "videomae.embeddings.patch_embeddings.projection",
        "classifier": "classifier",
    }
    model.num_classes = num_classes
    return model
