"""Image backbones from Hugging Face transformers and open_clip, by name, for a task:

- ``hf:<folder or hub id>`` of a ViT or DINOv2 checkpoint: its ``*ForImageClassification``
  with a new classifier for the task's classes; of a CLIP (or CLIP vision) checkpoint: its
  `CLIPVisionModel` with a linear head on the pooled embedding (`TowerClassifier`). A hub id is
  read from the local Hugging Face cache, or from the hub when it can be reached.
- ``open_clip:<arch>`` (an open_clip model name, or a model config ``.json`` file) with a
  pretrained tag (``open_clip:ViT-B-32@laion2b_s34b_b79k``, from the local cache) or a local
  weights file (``checkpoint``): its image tower with a linear head on the image embedding.

Each model gets a timm-like ``pretrained_cfg`` (architecture, input size, mean, std,
classifier) and ``num_classes``, so training, evaluation and the adapter files treat it like a
timm model. These models run at their checkpoint's input size.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

from torch import nn

from repadapter.errors import RepAdapterError, first_line
from repadapter.families.building import (
    CHECKPOINT_FIX,
    HF_PREFIX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPEN_CLIP_PREFIX,
    add_drop_path,
    hf_local_file,
    hf_model_type,
    hub_unavailable,
    transformers_module,
)
from repadapter.families.tower_classifier import TowerClassifier
from repadapter.files import refuse_pickle

HF_IMAGE_TYPES = ("vit", "dinov2", "clip", "clip_vision_model")
# The statistics each family's image processor normalises with (transformers' defaults).
_HF_STATS = {
    "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
_HF_STATS["clip_vision_model"] = _HF_STATS["clip"]


# Each family's encoder layer and its two residual branches, for stochastic depth as hooks.
_LAYERS = {
    "vit": ("transformers.models.vit.modeling_vit.ViTLayer", ("attention", "mlp")),
    "dinov2": ("transformers.models.dinov2.modeling_dinov2.Dinov2Layer", ("layer_scale1", "layer_scale2")),
    "clip": ("transformers.models.clip.modeling_clip.CLIPEncoderLayer", ("self_attn", "mlp")),
    "open_clip": ("open_clip.transformer.ResidualAttentionBlock", ("ls_1", "ls_2")),
}
_LAYERS["clip_vision_model"] = _LAYERS["clip"]


def _refuse_size(name: str, img_size: int | None, size: int) -> None:
    if img_size is not None and img_size != size:
        raise RepAdapterError(
            f"{name} runs at its checkpoint's input size {size}; leave --img-size unset (or give {size})"
        )


def _pretrained_cfg(name: str, size: tuple[int, int], mean: Any, std: Any, classifier: str, n: int) -> dict:
    return {
        "architecture": name,
        "input_size": (3, *size),
        "mean": tuple(mean),
        "std": tuple(std),
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "classifier": classifier,
        "num_classes": n,
    }


def _hf_image(
    source: str,
    model_type: str,
    num_classes: int,
    pretrained: bool,
    checkpoint: object,
    drop_path: float,
    img_size: int | None,
) -> nn.Module:
    transformers = transformers_module()
    name = f"{HF_PREFIX}{source}"
    if model_type not in HF_IMAGE_TYPES:
        raise RepAdapterError(
            f"{name} is a {model_type} model; hf: image models are {', '.join(HF_IMAGE_TYPES)} (and videomae)"
        )
    if checkpoint is not None:
        raise RepAdapterError(f"{name} loads its own weights; leave --checkpoint unset")
    clip = model_type.startswith("clip")
    try:
        if clip:
            config = transformers.CLIPVisionConfig.from_pretrained(source)
            cls = transformers.CLIPVisionModel
        else:
            config = transformers.AutoConfig.from_pretrained(source, num_labels=num_classes)
            cls = transformers.AutoModelForImageClassification
        size = int(config.image_size)
        _refuse_size(name, img_size, size)
        if pretrained:
            model, info = cls.from_pretrained(
                source, config=config, ignore_mismatched_sizes=not clip, output_loading_info=True
            )
            # a new classifier is expected; any other tensor left at its random init is not
            left = [str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", [])]
            left = [k for k in [*info.get("missing_keys", []), *left] if not k.startswith("classifier.")]
            if left:
                raise RepAdapterError(
                    f"{name} does not hold every weight of a {cls.__name__} (missing or of another shape: "
                    f"{', '.join(sorted(left)[:4])}); give a checkpoint of that architecture"
                )
        else:
            model = cls.from_config(config) if not clip else cls(config)
    except pickle.UnpicklingError as err:  # transformers reads .bin files with weights_only=True
        raise refuse_pickle(source, "Save it with save_pretrained(safe_serialization=True).") from err
    except OSError as err:
        raise RepAdapterError(
            f"cannot load {name} (a local save_pretrained folder or a hub id): {err}"
        ) from err
    mean, std = _HF_STATS[model_type]
    processor = hf_local_file(source, "preprocessor_config.json")
    if processor is not None:
        settings = json.loads(processor.read_text())
        mean, std = settings.get("image_mean", mean), settings.get("image_std", std)
    add_drop_path(model, drop_path, *_LAYERS[model_type])
    if clip:
        model = TowerClassifier(model, config.hidden_size, num_classes)
    classifier = "head" if clip else "classifier"
    model.pretrained_cfg = _pretrained_cfg(name, (size, size), mean, std, classifier, num_classes)
    model.num_classes = num_classes
    return model


def _open_clip(
    spec: str,
    num_classes: int,
    pretrained: bool,
    checkpoint: str | os.PathLike[str] | None,
    drop_path: float,
    img_size: int | None,
) -> nn.Module:
    try:
        import open_clip
    except ImportError as err:
        raise RepAdapterError("open_clip: models need open_clip: pip install open_clip_torch") from err
    name = f"{OPEN_CLIP_PREFIX}{spec}"
    arch, _, tag = spec.partition("@")
    if arch.endswith(".json"):
        if not Path(arch).is_file():
            raise RepAdapterError(f"{name}: there is no open_clip model config {arch}")
        open_clip.add_model_config(arch)
        arch = Path(arch).stem
    if arch not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if arch.split("-")[0].lower() in m.lower()][:6]
        raise RepAdapterError(
            f"unknown open_clip model {arch!r}; open_clip names look like {close or ['ViT-B-32']} "
            "(open_clip.list_models() lists them all), or give a model config .json file"
        )
    if checkpoint is not None and tag:
        raise RepAdapterError(f"{name}: give a pretrained tag or --checkpoint FILE, not both")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise RepAdapterError(f"base checkpoint {checkpoint} does not exist")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained and checkpoint is None:
        if not tag:
            raise RepAdapterError(
                f"{name}: say which weights: open_clip:{arch}@<tag> (tags: {', '.join(tags) or 'none'}), "
                "--checkpoint FILE, or --no-pretrained"
            )
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        if not cfg:
            raise RepAdapterError(
                f"{arch} has no pretrained tag {tag!r}; its tags: {', '.join(tags) or 'none'}"
            )
        hub_id = str(cfg.get("hf_hub") or "").strip("/")
        why = (
            hub_unavailable(hub_id, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
            if hub_id
            else "it is not on the Hugging Face Hub"
        )
        if why:
            raise RepAdapterError(
                f"the pretrained weights of {name} are not in the local cache and {why}; give a local "
                "weights file (--checkpoint FILE) or build the model from a random init (--no-pretrained)"
            )
    weights = str(checkpoint) if checkpoint is not None else (tag if pretrained and tag else None)
    try:
        clip = open_clip.create_model(arch, pretrained=weights)
    except pickle.UnpicklingError as err:
        raise refuse_pickle(str(checkpoint or name), CHECKPOINT_FIX) from err
    except RuntimeError as err:  # a strict load of weights for another architecture
        raise RepAdapterError(
            f"cannot load the weights of {name} from {checkpoint or tag}: {first_line(err)}"
        ) from err
    tower: Any = add_drop_path(clip.visual, drop_path, *_LAYERS["open_clip"])
    size = tuple(int(s) for s in tower.image_size)
    _refuse_size(name, img_size, size[0] if size[0] == size[1] else -1)
    model = TowerClassifier(tower, int(tower.output_dim), num_classes)
    mean = getattr(tower, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(tower, "image_std", None) or open_clip.OPENAI_DATASET_STD
    model.pretrained_cfg = _pretrained_cfg(name, (size[0], size[1]), mean, std, "head", num_classes)
    return model


def create_image_tower(
    name: str,
    num_classes: int,
    pretrained: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    drop_path: float = 0.0,
    img_size: int | None = None,
    model_type: str | None = None,
) -> nn.Module:
    """The classifier ``name`` (``hf:`` image or ``open_clip:``, see the module doc) for
    ``num_classes`` classes; ``model_type`` is an ``hf:`` checkpoint's, when already read."""
    if num_classes < 1:
        raise RepAdapterError(f"{name} builds a classifier; it needs a positive number of classes")
    if name.startswith(OPEN_CLIP_PREFIX):
        spec = name[len(OPEN_CLIP_PREFIX) :]
        return _open_clip(spec, num_classes, pretrained, checkpoint, drop_path, img_size)
    source = name[len(HF_PREFIX) :]
    kind = model_type or hf_model_type(source, fetch=True)
    return _hf_image(source, str(kind), num_classes, pretrained, checkpoint, drop_path, img_size)
