"""A trained model rebuilt from files: the base model with an adapter file loaded, the same model
with its adapters folded in (what ``repadapter merge``, ``export`` and ``predict`` deploy), or a
merged checkpoint loaded into the plain architecture.

    deployed = deployed_model("runs/cifar100/adapter.safetensors", "vit_base_patch16_224")
    deployed.model(images)  # a plain timm model: no adapter modules, the trained head

The base model is built as training built it (the random seed the adapter file records first)
and checked against the backbone fingerprint the file records, so an adapter is never applied
silently to other base weights than the ones it was trained on.
"""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass

import timm
import torch
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families import task_of
from repadapter.families.factory import PACKAGED
from repadapter.families.video import is_video_model
from repadapter.files import AdapterFile, read_adapter_file, read_tensor_file_with_metadata
from repadapter.training.config import resolve_config
from repadapter.training.protocol import TRAINED_FORMAT, load_trained
from repadapter.training.tasks import task_kind
from repadapter.training.tasks.segmentation import match_trained_head
from repadapter.training.trainer import seed_everything
from repadapter.tuner.adapter_files import backbone_fingerprint, load_adapter
from repadapter.tuner.merge import merge

AdapterSource = str | os.PathLike[str] | AdapterFile


@dataclass(frozen=True)
class Deployed:
    """A model with its adapters folded in, its number of classes and the kind of task it is for
    ("classification", "segmentation" or "video")."""

    model: nn.Module
    num_classes: int
    task: str


def adapter_task(adapter: AdapterFile) -> str:
    """The kind of task whose models ``adapter`` was trained on: its recorded family's task, as the
    family registry knows it (a file that records no family: a classifier's)."""
    family = adapter.metadata.get("family")
    return task_of(str(family)) if family else "classification"


def check_model_kind(adapter: AdapterFile, model: str) -> None:
    """Refuse to build ``model`` for ``adapter`` when one is for video and the other not, before a
    model of the wrong kind is built (`repadapter.tuner.adapter_files.check_family` checks the rest)."""
    family = adapter.metadata.get("family")
    if (adapter_task(adapter) == "video") != is_video_model(model):
        made_for = adapter.metadata.get("base_model") or "the model it was trained on"
        raise RepAdapterError(
            f"{adapter.path} is for model family {family!r} (made for {made_for}), but --model {model} "
            f"builds {'a video' if is_video_model(model) else 'an image'} model; pass --model {made_for}"
        )


def adapted_model(
    adapter: AdapterSource,
    model: str,
    *,
    num_classes: int | None = None,
    task: str | None = None,
    pretrained: bool = True,
    checkpoint: str | None = None,
    img_size: int | None = None,
) -> nn.Module:
    """The base model ``model`` (a name as `repadapter.create` takes it, with ``pretrained``
    weights, a ``checkpoint`` file or a random init, at ``img_size``) with the adapter file
    ``adapter`` loaded, not merged: built as training built it (the seed the file records first)
    and checked to be the backbone the file was trained on. ``num_classes`` and ``task`` default
    to the file's own. Raises `RepAdapterError` naming the fix when the file does not fit."""
    adapter = adapter if isinstance(adapter, AdapterFile) else read_adapter_file(adapter)
    check_model_kind(adapter, model)
    if num_classes is None:
        num_classes = _recorded_classes(adapter)
    return _adapted(
        adapter, model, num_classes, task or adapter_task(adapter), pretrained, checkpoint, img_size
    )


def deployed_model(
    adapter: AdapterSource,
    model: str,
    *,
    pretrained: bool = True,
    checkpoint: str | None = None,
    img_size: int | None = None,
) -> Deployed:
    """`adapted_model` with the adapters folded in (computed in float64, cast once): a plain model
    of ``model``'s architecture with the trained head, the number of classes and the task kind
    the adapter file records."""
    adapter = adapter if isinstance(adapter, AdapterFile) else read_adapter_file(adapter)
    check_model_kind(adapter, model)
    num_classes = _recorded_classes(adapter)
    task = adapter_task(adapter)
    adapted = _adapted(adapter, model, num_classes, task, pretrained, checkpoint, img_size)
    return Deployed(merge(adapted, inplace=True), num_classes, task)


def _recorded_classes(adapter: AdapterFile) -> int:
    num_classes = adapter.metadata.get("num_classes")
    if not isinstance(num_classes, int):
        raise RepAdapterError(
            f"{adapter.path} does not record its number of classes; it cannot be merged here"
        )
    return num_classes


def _adapted(
    adapter: AdapterFile,
    model: str,
    num_classes: int,
    task: str,
    pretrained: bool,
    checkpoint: str | None,
    img_size: int | None,
) -> nn.Module:
    cfg = resolve_config(
        task=task, model=model, pretrained=pretrained, checkpoint=checkpoint, img_size=img_size, drop_path=0.0
    )
    record = adapter.metadata.get("backbone")
    if isinstance(record, dict) and isinstance(record.get("seed"), int):
        seed_everything(record["seed"])
    base = match_trained_head(task_kind(cfg.task).build_model(cfg, num_classes), adapter.tensors)
    adapted = load_adapter(base, adapter)
    if not isinstance(record, dict):
        warnings.warn(
            f"{adapter.path} does not record the backbone it was trained on (an older file, or one from "
            "save_adapter); it is applied, unchecked, to the backbone these flags build",
            stacklevel=3,
        )
    elif backbone_fingerprint(adapted) != record.get("sha256"):
        size = f" --img-size {record['img_size']}" if record.get("img_size") else ""
        source = (
            f"--checkpoint {record['checkpoint']} (that very file)"
            if record.get("checkpoint")
            else "--pretrained (the weights it was trained on may have changed on the hub)"
            if record.get("pretrained")
            else f"--no-pretrained (a random init, seed {record.get('seed')}, as this torch and timm draw it)"
        )
        raise RepAdapterError(
            f"{adapter.path} was trained on another backbone than the one these flags build; rebuild "
            f"it with --model {record.get('model')}{size} {source}"
        )
    return adapted


def merged_model(
    weights: dict[str, torch.Tensor],
    model: str,
    num_classes: int,
    *,
    task: str = "classification",
    img_size: int | None = None,
    label: str = "the merged checkpoint",
) -> nn.Module:
    """The plain ``model`` architecture for ``task`` with ``num_classes`` classes (at
    ``img_size``) and the merged checkpoint ``weights`` loaded strictly (a segmentation head
    shaped as the tensors say); ``label`` names the checkpoint in the error when they do not fit."""
    cfg = resolve_config(task=task, model=model, pretrained=False, img_size=img_size, drop_path=0.0)
    built = task_kind(cfg.task).build_model(cfg, num_classes)
    try:
        built = match_trained_head(built, weights)
        built.load_state_dict(weights, strict=True)
    except (RuntimeError, OSError) as err:
        said = " ".join(str(err).split())
        raise RepAdapterError(
            f"{label} does not fit {model} with {num_classes} classes: "
            f"{said[:300]}{'...' if len(said) > 300 else ''}"
        ) from err
    return built


def weights_model(
    weights: str | os.PathLike[str],
    model: str,
    num_classes: int,
    *,
    task: str = "classification",
    img_size: int | None = None,
    file: tuple[dict[str, str], dict[str, torch.Tensor]] | None = None,
) -> nn.Module:
    """The model a ``--weights`` file makes: a merged checkpoint loaded strictly into ``model``'s
    plain architecture (`merged_model`), or the ``trained.safetensors`` of a run of a method
    without adapters, rebuilt as its run built it (`repadapter.training.protocol.load_trained`).
    ``file`` is the file's (header, tensors) when the caller has read it already."""
    header, tensors = file or read_tensor_file_with_metadata(weights, "merged checkpoint (--weights)")
    if header.get("format") == TRAINED_FORMAT:
        return load_trained(weights, header, tensors, task, num_classes, model)
    return merged_model(tensors, model, num_classes, task=task, img_size=img_size, label=str(weights))


def merged_classifier(
    weights: str | os.PathLike[str], model: str, *, img_size: int | None = None
) -> tuple[nn.Module, int]:
    """The image classifier a ``--weights`` file makes (`weights_model`), and its number of
    classes, which ``repadapter merge`` and training runs record in the file."""
    header, tensors = read_tensor_file_with_metadata(weights, "merged checkpoint (--weights)")
    recorded = header.get("num_classes", "")
    if not recorded.isdigit():
        raise RepAdapterError(
            f"{weights} does not record its number of classes; give a checkpoint written by "
            "repadapter merge, or the adapter file with --adapter"
        )
    num_classes = int(recorded)
    built = weights_model(weights, model, num_classes, img_size=img_size, file=(header, tensors))
    return built, num_classes


def load_snippet(model: nn.Module, name: str, num_classes: int, img_size: int | None, file: str) -> list[str]:
    """Python lines that build ``name``'s plain architecture with ``num_classes`` classes (at
    ``img_size`` where the architecture takes one) and load all of ``file`` into it, strictly.
    Not timm's pretrained path: that drops a classifier whose size is not the default one."""
    load = [
        f"model.load_state_dict(safetensors.torch.load_file({str(file)!r}), strict=True)",
        "model.eval()",
    ]
    if ":" in name:  # local-dir:, hf-hub:, hf:, open_clip: names are read the way repadapter reads them
        size = f", img_size={img_size}" if img_size else ""
        return [
            "import safetensors.torch",
            "from repadapter.families.factory import create_base",
            f"model = create_base({name!r}, {num_classes}, pretrained=False{size})",
            *load,
        ]
    arch = PACKAGED[name].architecture if name in PACKAGED else name
    lines = ["import safetensors.torch, timm"]
    if timm.models.model_entrypoint(arch.split(".")[0]).__module__.startswith("repadapter."):
        lines.append(f"import repadapter  # registers {arch.split('.')[0]} with timm")
    takes_size = "img_size" in inspect.signature(type(model)).parameters
    size = f", img_size={img_size}" if img_size and takes_size else ""
    return [
        *lines,
        f"model = timm.create_model({arch!r}, num_classes={num_classes}{size})",
        *load,
    ]
