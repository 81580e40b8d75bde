"""Planning and injection: where a model's adapters go, which parameters train, and `inject`."""

from __future__ import annotations

import re
import warnings
from typing import cast

from torch import nn

from repadapter.config import RepAdapterConfig
from repadapter.errors import RepAdapterError
from repadapter.families import Family, SiteSpec, family_of
from repadapter.families.generic import GENERIC, target_sites
from repadapter.layers.adapter import RepAdapter
from repadapter.tuner.hosts import (
    ADAPTER_ATTR,
    CONFIG_KEY,
    MERGED_KEY,
    Site,
    adapt_host,
    adapted_hosts,
    consumer_projections,
    host_projection,
)


def family_for(model: nn.Module, config: RepAdapterConfig) -> Family:
    """The family whose placements and head ``config`` uses; any model with ``target_modules``."""
    if config.target_modules:
        try:
            return family_of(model)
        except RepAdapterError:
            return GENERIC
    return family_of(model)


def _site_specs(model: nn.Module, family: Family, config: RepAdapterConfig) -> list[SiteSpec]:
    if config.target_modules:
        return target_sites(model, config.target_modules)
    RepAdapterConfig.check_placement(config.placement, family.placements, f"{family.name} models")
    return family.sites(model, config.placement)


def plan(model: nn.Module, family: Family, config: RepAdapterConfig) -> list[Site]:
    """Resolve every site of ``config`` in ``model`` and check it, touching nothing."""
    sites = []
    for spec in _site_specs(model, family, config):
        host = model.get_submodule(spec.host)
        if isinstance(host, nn.Sequential | nn.ModuleList | nn.ModuleDict):
            raise RepAdapterError(
                f"{spec.host} is a {type(host).__name__}, whose forward would run its adapter as one "
                "more layer; host the adapter on the first layer inside it instead"
            )
        norms = tuple(model.get_submodule(p) if p else None for p in spec.batch_norms)
        sink = model.get_submodule(spec.bias_sink) if spec.bias_sink else None
        if spec.not_foldable:
            width, bias, sink = cast(nn.Conv2d, host).in_channels, True, None
        elif spec.output:
            producer = host_projection(host)
            width, bias = producer.out_features, producer.bias is not None
        else:
            consumers = consumer_projections(host, spec.consumers, norms)
            widths = {layer.in_features for layer in consumers}
            if len(widths) != 1:
                raise RepAdapterError(f"{spec.host}: consumers {spec.consumers} disagree on width {widths}")
            (width,) = widths
            if not all(layer.takes_shift for layer in consumers):
                sink, bias = None, False
            elif all(layer.bias is not None for layer in consumers):
                sink, bias = None, True
            else:
                bias = isinstance(getattr(sink, "bias", None), nn.Parameter)
                sink = sink if bias else None
        if width % config.groups:
            raise RepAdapterError(
                f"groups={config.groups} does not divide the width {width} at {spec.host}; "
                "pick groups that divide both dim and the model width"
            )
        input_norm = None
        if spec.bias_sink and not spec.channels_first:
            input_norm = model.get_submodule(spec.bias_sink)
        sites.append(
            Site(
                spec.host, host, spec.consumers, sink, width, bias,
                norms, spec.output, spec.channels_first, spec.not_foldable, input_norm,
            )
        )  # fmt: skip
    return sites


def trained_names(model: nn.Module, family: Family, config: RepAdapterConfig) -> list[str]:
    """Names of the parameters an injection trains: adapters, head, ``config.trainable``."""
    heads = family.head_prefixes(model) if config.train_head else ()
    patterns: list[re.Pattern[str]] = []
    for text in config.trainable:
        try:
            patterns.append(re.compile(text))
        except re.error as err:
            raise RepAdapterError(f"trainable pattern {text!r} is not a valid regex: {err}") from err
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(pattern.search(name) for name in names):
            raise RepAdapterError(
                f"trainable pattern {pattern.pattern!r} matches no parameter of this model; "
                f"parameter names look like {names[:3]}"
            )
    return [
        name
        for name in names
        if f".{ADAPTER_ATTR}." in name
        or any(name.startswith(f"{head}.") for head in heads)
        or any(p.search(name) for p in patterns)
    ]


def inject(model: nn.Module, config: RepAdapterConfig | None = None) -> nn.Module:
    """Insert RepAdapters into ``model`` in place and freeze everything they do not train.

    Trainable afterwards: the adapters, the classifier head (``config.train_head``) and base
    parameters matching ``config.trainable``. Returns ``model``.
    """
    config = config or RepAdapterConfig()
    if adapted_hosts(model):
        raise RepAdapterError(
            "this model already has RepAdapters; merge it, or build a fresh model, before injecting again"
        )
    family = family_for(model, config)
    sites = plan(model, family, config)
    trained = set(trained_names(model, family, config))
    bias_free = [site.path for site in sites if not site.bias]
    if bias_free:
        warnings.warn(
            f"{len(bias_free)} adapter site(s) ({', '.join(bias_free[:3])}, ...) have a consumer "
            "without bias (or a zero-padded convolution) and no norm bias before them: their "
            "adapters are built bias-free so that merging stays exact and adds no parameter",
            stacklevel=2,
        )
    for site in sites:
        ref = next(site.host.parameters())
        adapter = RepAdapter(
            site.in_features,
            config.dim,
            config.groups,
            config.scale,
            config.dropout,
            bias=site.bias,
            channels_first=site.channels_first,
        ).to(device=ref.device, dtype=ref.dtype)
        adapter.train(site.host.training)  # a model in eval mode must not start dropping out
        adapt_host(site, adapter)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trained or f".{ADAPTER_ATTR}." in name)
    model.__dict__[CONFIG_KEY] = config
    model.__dict__.pop(MERGED_KEY, None)
    return model
