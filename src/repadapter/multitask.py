"""Many tasks on one backbone: named adapters on a model, and task switches on a deployed one.

A model holds one live adapter (in its modules, trainable, saved by `save_adapter`) and any
number of stored ones, each kept with its own config and head exactly as an adapter file
would hold them. Switching stores the live adapter, takes it out, and puts the chosen one in,
so adapters of different configs and class counts can share one backbone. A deployed (merged)
model switches task with `switch_adapter`: unmerge the current adapter, merge the next one,
and never reload the backbone.
"""

from __future__ import annotations

import os
from typing import Any, cast

from torch import nn

from repadapter.config import RepAdapterConfig
from repadapter.errors import RepAdapterError
from repadapter.families import head_of
from repadapter.files import AdapterFile, read_adapter_file
from repadapter.tuner.adapter_files import load_adapter, snapshot
from repadapter.tuner.inject import inject
from repadapter.tuner.inspection import adapter_config
from repadapter.tuner.merge import merge, unload, unmerge

DEFAULT = "default"
# Kept in ``model.__dict__`` (out of ``state_dict``), beside the tuner's own keys
# (`repadapter.tuner.hosts`): the stored adapters as `snapshot`s, by name, and the live one's name.
STORE_KEY = "repadapter_store"
ACTIVE_KEY = "repadapter_active"


def _store(model: nn.Module) -> dict[str, AdapterFile]:
    return model.__dict__.setdefault(STORE_KEY, {})


def active_adapter(model: nn.Module) -> str:
    """The name of the live adapter (``"default"`` for the one `inject` made)."""
    adapter_config(model)
    return model.__dict__.get(ACTIVE_KEY, DEFAULT)


def adapter_names(model: nn.Module) -> list[str]:
    """The live adapter's name, then the stored ones'."""
    return [active_adapter(model), *_store(model)]


def _set_num_classes(model: nn.Module, num_classes: int, fresh: bool = False) -> None:
    """Give ``model`` a new classifier for ``num_classes`` (unless it has one of that size and
    not ``fresh``), on the device and dtype it had."""
    if getattr(model, "num_classes", None) == num_classes and not fresh:
        return
    heads = head_of(model)
    ref = next(p for p in model.get_submodule(heads[0]).parameters())
    cast(Any, model).reset_classifier(num_classes)  # timm models have it; others get an AttributeError
    for head in heads:
        model.get_submodule(head).to(device=ref.device, dtype=ref.dtype)


def add_adapter(
    model: nn.Module, name: str, config: RepAdapterConfig | None = None, num_classes: int | None = None
) -> nn.Module:
    """Store the live adapter and make a fresh one, ``name``, live, with a fresh head.

    ``config`` defaults to the live adapter's, ``num_classes`` to the model's.
    """
    if name in adapter_names(model):
        raise RepAdapterError(
            f"the model already has an adapter named {name!r}; names: {adapter_names(model)}"
        )
    current = active_adapter(model)
    config = config or adapter_config(model)
    _store(model)[current] = snapshot(model, f"adapter {current!r}")
    unload(model)
    _set_num_classes(model, num_classes or int(cast(Any, model).num_classes), fresh=True)
    inject(model, config)
    model.__dict__[ACTIVE_KEY] = name
    return model


def set_active_adapter(model: nn.Module, name: str) -> nn.Module:
    """Make the stored adapter ``name`` (with its head) the live one; store the current one."""
    current = active_adapter(model)
    if name == current:
        return model
    store = _store(model)
    if name not in store:
        raise RepAdapterError(f"no adapter named {name!r}; names: {adapter_names(model)}")
    store[current] = snapshot(model, f"adapter {current!r}")
    target = store.pop(name)
    unload(model)
    _set_num_classes(model, target.metadata["num_classes"])
    load_adapter(model, target)
    model.__dict__[ACTIVE_KEY] = name
    return model


def delete_adapter(model: nn.Module, name: str) -> nn.Module:
    """Forget the stored adapter ``name``; the live adapter cannot be deleted."""
    if name == active_adapter(model):
        raise RepAdapterError(
            f"{name!r} is the live adapter; set_active_adapter another one before deleting it"
        )
    if _store(model).pop(name, None) is None:
        raise RepAdapterError(f"no adapter named {name!r}; names: {adapter_names(model)}")
    return model


def switch_adapter(
    deployed: nn.Module, current: str | os.PathLike[str], target: str | os.PathLike[str]
) -> nn.Module:
    """Move a merged model from the task of adapter file ``current`` to that of ``target``, in place."""
    target_classes = read_adapter_file(target).metadata["num_classes"]
    unload(unmerge(deployed, current, inplace=True))
    _set_num_classes(deployed, target_classes)
    return merge(load_adapter(deployed, target), inplace=True)
