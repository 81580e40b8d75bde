"""A model's adapter files: what an injected model saves, and the checks before one loads.

The file format itself (safetensors + JSON header, atomic writes) is `repadapter.files`; this
module decides what goes in it (`snapshot`) and refuses, before touching a model, a file made for
another family, depth, width or head.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repadapter._version import __version__
from repadapter.errors import RepAdapterError
from repadapter.families import Family, family_of
from repadapter.families.factory import constructor_kwargs
from repadapter.families.segmenter import SEGMENTER, backbone_family
from repadapter.files import AdapterFile, read_adapter_file, tensors_sha256, write_adapter_file
from repadapter.tuner.hosts import ADAPTER_ATTR, Site, adapted_hosts, site_of
from repadapter.tuner.inject import family_for, inject, plan, trained_names
from repadapter.tuner.inspection import adapter_config


def _base_model_name(model: nn.Module) -> str | None:
    """timm's ``architecture.tag``, or a Hugging Face model's ``name_or_path``, when recorded."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch, tag = cfg.get("architecture"), cfg.get("tag")
    if arch:
        return f"{arch}.{tag}" if tag else arch
    return getattr(getattr(model, "config", None), "name_or_path", None) or None


def _family_names(model: nn.Module, family: Family) -> tuple[str, str | None]:
    """The family's name and, for a Segmenter, its backbone's family's name."""
    return family.name, backbone_family(model).name if family is SEGMENTER else None


def snapshot(model: nn.Module, label: str) -> AdapterFile:
    """The trained part of an injected model (adapters, head, extras) and its description, as an
    adapter file held in memory, named ``label`` in errors: what `save_adapter` writes, and what
    `load_adapter` takes back (`repadapter.multitask` keeps its stored adapters so)."""
    config = adapter_config(model)
    family = family_for(model, config)
    state = model.state_dict()
    tensors = {name: state[name].detach().clone() for name in trained_names(model, family, config)}
    metadata = {
        "library_version": __version__,
        "config": config.to_dict(),
        "family": family.name,
        "base_model": _base_model_name(model),
        "num_classes": getattr(model, "num_classes", None),
        "sites": {path_: site_of(host).describe() for path_, host in adapted_hosts(model)},
    }
    backbone = _family_names(model, family)[1]
    if backbone is not None:
        metadata["backbone_family"] = backbone
    base, classes = _base_model_name(model), getattr(model, "num_classes", None)
    if base and family.library == "timm" and isinstance(classes, int):
        # what from_pretrained needs to rebuild a non-default base (depth, image size, ...)
        metadata["base_kwargs"] = constructor_kwargs(model, base, classes)
    return AdapterFile(config=config, metadata=metadata, tensors=tensors, path=label)


def save_adapter(
    model: nn.Module, path: str | os.PathLike[str], backbone: dict[str, Any] | None = None
) -> Path:
    """Write the trained part of an injected model (adapters, head, extras) to ``path``.

    ``backbone`` (JSON-ready) says where the frozen base came from (the training engine gives
    the model name, pretrained or checkpoint, seed); it is stored with the base's
    `backbone_fingerprint`, so that whoever loads the file can check they rebuilt the same base.
    """
    saved = snapshot(model, str(path))
    metadata = saved.metadata
    if backbone is not None:
        metadata = {**metadata, "backbone": {**backbone, "sha256": backbone_fingerprint(model)}}
    return write_adapter_file(path, saved.tensors, metadata)


def backbone_fingerprint(model: nn.Module) -> str:
    """SHA-256 of every tensor of an injected model that its adapter file does not hold (names,
    dtypes, shapes and bytes, in name order): the frozen base the adapters were trained on."""
    config = adapter_config(model)
    trained = set(trained_names(model, family_for(model, config), config))
    state = model.state_dict()
    return tensors_sha256(
        {n: t for n, t in state.items() if n not in trained and f".{ADAPTER_ATTR}." not in n}
    )


def load_adapter(model: nn.Module, path: str | os.PathLike[str] | AdapterFile) -> nn.Module:
    """Inject ``model`` with the config saved in ``path`` and load the file's tensors into it;
    ``path`` may also be an adapter file already read (`read_adapter_file`) or a `snapshot`.

    A model that already has adapters of the file's config takes the file's tensors into them.
    """
    file = path if isinstance(path, AdapterFile) else read_adapter_file(path)
    if adapted_hosts(model):
        if adapter_config(model) != file.config:
            raise RepAdapterError(
                f"this model already has adapters with config {adapter_config(model)}, but "
                f"{file.path} was saved with {file.config}; load it into a model without adapters"
            )
        family = family_for(model, file.config)
        sites = [site_of(host) for _, host in adapted_hosts(model)]
    else:
        family = family_for(model, file.config)
        check_family(model, family, file)  # before planning: another family's placement may not exist here
        sites = plan(model, family, file.config)
    check_file_matches(model, family, sites, file)
    if not adapted_hosts(model):
        inject(model, file.config)
    load_tensors(model, file, adapters_only=False)
    return model


def check_family(model: nn.Module, family: Family, file: AdapterFile) -> None:
    """Refuse a file whose header names another model family (or, for a Segmenter, another
    backbone family) than ``model``'s, saying which family it is for."""
    meta = file.metadata
    name, backbone = _family_names(model, family)
    theirs, their_backbone = meta.get("family"), meta.get("backbone_family")
    if theirs == name and (backbone is None or their_backbone in (None, backbone)):
        return
    made_for = meta.get("base_model") or "a model it does not name"
    wanted = f"{theirs!r}" + (f" with a {their_backbone!r} backbone" if their_backbone else "")
    ours = f"{name!r}" + (f" with a {backbone!r} backbone" if backbone else "")
    part = _submodule_of_family(model, str(theirs))
    fix = (
        f"it fits this model's submodule {part!r}: pass model.{part}"
        if part
        else (f"load it into a model of that family, e.g. {made_for}")
    )
    raise RepAdapterError(
        f"{file.path} is for model family {wanted} (made for {made_for}), but this model is {ours}; {fix}"
    )


def check_file_matches(model: nn.Module, family: Family, sites: list[Site], file: AdapterFile) -> None:
    """Refuse a file made for another family, depth, width or head than ``model`` with ``sites``
    (planned or live), before touching the model."""
    meta, where = file.metadata, file.path
    made_for = f"(it was made for {meta.get('base_model') or 'an unnamed model'})"
    check_family(model, family, file)
    ours = {site.path: site.describe() for site in sites}
    theirs = meta["sites"]
    if set(ours) != set(theirs):
        missing = sorted(set(ours) - set(theirs))
        extra = sorted(set(theirs) - set(ours))
        raise RepAdapterError(
            f"{where} has adapters at {len(theirs)} sites, this model has {len(ours)} {made_for}; "
            f"only in the model: {missing[:4]}, only in the file: {extra[:4]}. Load it into a "
            "model of the same depth."
        )
    for path, described in ours.items():
        if theirs[path] != described:
            raise RepAdapterError(
                f"{where}: the adapter at {path} was made for {theirs[path]}, this model has "
                f"{described} {made_for}. Load it into a model of the same width."
            )
    expected = {n for n in trained_names(model, family, file.config) if f".{ADAPTER_ATTR}." not in n}
    lacking = sorted(expected - set(file.tensors))
    if lacking:
        raise RepAdapterError(
            f"{where} has no {', '.join(lacking[:4])}, which this model trains with the file's config "
            f"{made_for}; load it into the same architecture"
        )
    state = model.state_dict()
    for name, tensor in file.tensors.items():
        if f".{ADAPTER_ATTR}." in name:
            continue
        if name not in state:
            raise RepAdapterError(f"{where} holds {name}, which this model does not have {made_for}")
        if state[name].shape != tensor.shape:
            hint = ""
            if any(name.startswith(f"{h}.") for h in family.head_prefixes(model)):
                hint = f" Build the model with num_classes={meta.get('num_classes')}."
            raise RepAdapterError(
                f"{where}: {name} has shape {tuple(tensor.shape)} in the file but "
                f"{tuple(state[name].shape)} in this model {made_for}.{hint}"
            )


def _submodule_of_family(model: nn.Module, name: str) -> str | None:
    """The first submodule of ``model`` in the family called ``name`` (a CLIP model's image tower)."""
    for path, module in model.named_modules():
        try:
            if path and family_of(module).name == name:
                return path
        except RepAdapterError:
            continue
    return None


def load_tensors(model: nn.Module, file: AdapterFile, adapters_only: bool) -> None:
    """Copy ``file``'s tensors (only the adapters' when ``adapters_only``) into an injected model."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in file.tensors.items():
            if adapters_only and f".{ADAPTER_ATTR}." not in name:
                continue
            if name not in params or params[name].shape != tensor.shape:
                raise RepAdapterError(f"{file.path}: tensor {name} does not fit this model")
            params[name].copy_(tensor)
