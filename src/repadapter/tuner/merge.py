"""Deploying an injected model: `merge` folds its adapters into the base weights, `unmerge`
takes an adapter file's adapters back out exactly, `unload` drops them unfolded.

`merge` is the one way RepAdapter adapters fold into a model: timm's ``fuse()`` hook folds each
host with the same `repadapter.tuner.hosts.fold_host`, `repadapter.training.methods.deploy`
and `repadapter.multitask.switch_adapter` call `merge` and `unmerge`.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.files import read_adapter_file
from repadapter.tuner.adapter_files import check_file_matches, load_tensors
from repadapter.tuner.hosts import (
    CONFIG_KEY,
    MERGED_KEY,
    adapted_hosts,
    adapter_of,
    check_foldable,
    fold_host,
    remove_adapter,
    site_of,
    unfold_host,
)
from repadapter.tuner.inject import family_for, inject, plan
from repadapter.tuner.inspection import adapter_config, injected_submodules


def _check_mergeable(model: nn.Module) -> None:
    """Refuse, before anything changes, adapters that cannot fold or whose shift cannot go
    through ``M^-1`` into a norm."""
    for _, host in adapted_hosts(model):
        site = site_of(host)
        check_foldable(site)
        if site.bias_sink is not None:
            adapter_of(host).affine().check_invertible(site.path)


def merge(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every adapter into the layers after it; returns the vanilla architecture.

    The result's ``state_dict()`` loads with ``strict=True`` into a model built without
    adapters, and computes the same function in eval mode. Works on a copy unless ``inplace``.
    A model whose submodules were injected (``inject(clip.visual)``, then ``merge(clip)``) has
    those submodules merged.
    """
    parts = injected_submodules(model) if adapted_hosts(model) else []
    for part in parts:
        _check_mergeable(model.get_submodule(part))
    if parts:
        if not inplace:
            model = copy.deepcopy(model)
        for part in parts:
            merge(model.get_submodule(part), inplace=True)
        return model
    config = adapter_config(model)
    _check_mergeable(model)
    if not inplace:
        model = copy.deepcopy(model)
    for _, host in adapted_hosts(model):
        fold_host(host)
    del model.__dict__[CONFIG_KEY]
    model.__dict__[MERGED_KEY] = config
    return model


def unmerge(model: nn.Module, adapter_file: str | os.PathLike[str], inplace: bool = False) -> nn.Module:
    """Exact inverse of `merge`: take the adapters of ``adapter_file`` back out of ``model``.

    ``model`` must be the merged model of that adapter (same base weights, same head). Returns
    the injected model with the file's adapters, as before the merge.
    """
    if adapted_hosts(model):
        raise RepAdapterError("this model still has RepAdapters; unmerge takes a merged model")
    file = read_adapter_file(adapter_file)
    family = family_for(model, file.config)
    sites = plan(model, family, file.config)
    for site in sites:
        check_foldable(site)
    check_file_matches(model, family, sites, file)
    state = model.state_dict()
    for head in family.head_prefixes(model) if file.config.train_head else ():
        for name, tensor in file.tensors.items():
            if name.startswith(f"{head}.") and not torch.equal(
                state[name].cpu(), tensor.to(state[name].dtype)
            ):
                raise RepAdapterError(
                    f"{name} in this model differs from {file.path}: the model was not merged "
                    "from that adapter file, so unmerging it would corrupt the base weights"
                )
    if not inplace:
        model = copy.deepcopy(model)
    inject(model, file.config)
    load_tensors(model, file, adapters_only=True)
    hosts = [host for _, host in adapted_hosts(model)]
    affines = [adapter_of(host).affine() for host in hosts]
    try:
        for host, affine in zip(hosts, affines, strict=True):
            affine.check_invertible(site_of(host).path)
    except RepAdapterError:
        for host in hosts:  # leave the merged model as it came
            remove_adapter(host)
        raise
    for host, affine in zip(hosts, affines, strict=True):
        unfold_host(host, affine)
    return model


def unload(model: nn.Module) -> nn.Module:
    """Take the adapters out without folding them in: the base model as it was injected."""
    adapter_config(model)
    for _, host in adapted_hosts(model):
        remove_adapter(host)
    del model.__dict__[CONFIG_KEY]
    return model
