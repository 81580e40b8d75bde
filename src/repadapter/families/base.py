"""What a model family tells the rest of repadapter: how to recognise its models, where adapters
go, which modules are the head, what kind of task its models do, and which library builds them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

from repadapter.errors import RepAdapterError


@dataclass(frozen=True)
class SiteSpec:
    """One adapter site.

    Attributes:
        host: path of the module whose (first) input the adapter transforms, e.g.
            ``"blocks.0.attn"``. The host must feed that input only to ``consumers``.
        consumers: the linear layers inside ``host`` that read the input, as paths relative
            to ``host``; the adapter folds into each of them.
        bias_sink: path of a norm whose output is the host's input and nothing else's; its bias
            can take the adapter's shift when a consumer has no bias of its own.
        batch_norms: for bias-free convolutions, the path of the eval-mode BatchNorm that reads
            each consumer's output (one per consumer, ``None`` where there is none); its running
            mean takes the adapter's shift.
        output: the adapter transforms the host's *output* instead; the host is then the one
            layer it folds into, as the producer (``consumers`` is empty).
        channels_first: the host's input is (N, C, H, W); the adapter runs as 1x1 convolutions.
        not_foldable: why this site cannot be merged, and what to use instead. Such a site
            trains and saves like any other; `merge` refuses it with this text.
    """

    host: str
    consumers: tuple[str, ...]
    bias_sink: str | None = None
    batch_norms: tuple[str | None, ...] = ()
    output: bool = False
    channels_first: bool = False
    not_foldable: str | None = None

    def __post_init__(self) -> None:
        if self.output and (self.consumers or self.bias_sink or self.batch_norms):
            raise RepAdapterError(f"{self.host}: an output-side site folds into its host only")
        if self.batch_norms and len(self.batch_norms) != len(self.consumers):
            raise RepAdapterError(f"{self.host}: give one batch_norms entry per consumer")


TASKS = ("classification", "segmentation", "video")
LIBRARIES = ("timm", "transformers", "open_clip", "repadapter", "any")


@dataclass(frozen=True)
class Family:
    """A model family: how to recognise it, where its adapter sites are, what its head is.

    ``head_prefixes`` names the head's modules (the classifier, a decode head), the parameters
    that train with the adapters; ``()`` when the model has none. ``placements`` are the
    `RepAdapterConfig.placement` values ``sites`` understands. ``task`` is the kind of task its
    models do (one of ``TASKS``). ``library`` is the library whose classes it recognises:
    ``"timm"`` models are rebuilt by their recorded name (`repadapter.families.factory.create`);
    other libraries' models must be built by their user.
    """

    name: str
    description: str
    matches: Callable[[nn.Module], bool]
    sites: Callable[[nn.Module, str], list[SiteSpec]]
    head_prefixes: Callable[[nn.Module], tuple[str, ...]]
    library: str
    placements: tuple[str, ...] = ("attn", "block")
    task: str = "classification"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise RepAdapterError(f"family {self.name}: task {self.task!r} is not one of {TASKS}")
        if self.library not in LIBRARIES:
            raise RepAdapterError(f"family {self.name}: library {self.library!r} is not one of {LIBRARIES}")


_FAMILIES: dict[str, Family] = {}  # the ones `family_of` recognises
_NAMED: dict[str, Family] = {}  # every family an adapter file can name


def register_family(family: Family, recognised: bool = True) -> Family:
    """Add a family to the registry: to those `family_of` searches unless not ``recognised``
    (a family the user chooses, like the generic ``target_modules`` one), and to those
    `family_named` finds."""
    if recognised:
        _FAMILIES[family.name] = family
    _NAMED[family.name] = family
    return family


def find_family(model: nn.Module) -> Family | None:
    """The registered family of ``model``, or None."""
    return next((family for family in _FAMILIES.values() if family.matches(model)), None)


def family_of(model: nn.Module) -> Family:
    """The registered family of ``model``, or an error listing the supported ones."""
    family = find_family(model)
    if family is not None:
        return family
    supported = "; ".join(f"{f.name}: {f.description}" for f in _FAMILIES.values())
    raise RepAdapterError(
        f"repadapter does not support models of type {type(model).__module__}."
        f"{type(model).__qualname__}. Supported: {supported}"
    )


def family_named(name: str) -> Family:
    """The family called ``name`` (as an adapter file records it), or an error listing them."""
    if name not in _NAMED:
        raise RepAdapterError(
            f"unknown model family {name!r}: this repadapter knows {', '.join(_NAMED)}; "
            "a file naming another was written by another version of repadapter"
        )
    return _NAMED[name]


def head_of(model: nn.Module) -> tuple[str, ...]:
    """The module names of ``model``'s head: its family's `Family.head_prefixes`; for a model
    of no registered family, the classifier timm records in its ``pretrained_cfg``, if any."""
    family = find_family(model)
    return family.head_prefixes(model) if family is not None else recorded_classifier(model)


def task_of(model_or_family: nn.Module | str) -> str:
    """The kind of task (one of ``TASKS``) that a model, or the family of that name, does;
    ``"classification"`` for a model of no registered family."""
    if isinstance(model_or_family, str):
        return family_named(model_or_family).task
    family = find_family(model_or_family)
    return family.task if family is not None else "classification"


def is_instance_of(model: nn.Module, qualified_name: str) -> bool:
    """``isinstance`` by the class's ``module.QualName``, so an optional library need not be imported."""
    return any(f"{cls.__module__}.{cls.__qualname__}" == qualified_name for cls in type(model).__mro__)


def tower_sites(
    model: nn.Module, tower: str, sites: Callable[[nn.Module, str], list[SiteSpec]], placement: str
) -> list[SiteSpec]:
    """The ``sites`` of ``model``'s submodule ``tower`` (e.g. a CLIP model's image tower), with
    their paths taken from ``model``."""

    def under(path: str | None) -> str | None:
        return f"{tower}.{path}" if path else None

    return [
        replace(
            spec,
            host=f"{tower}.{spec.host}",
            bias_sink=under(spec.bias_sink),
            batch_norms=tuple(under(norm) for norm in spec.batch_norms),
        )
        for spec in sites(model.get_submodule(tower), placement)
    ]


def timm_classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The classifier module names timm records in ``pretrained_cfg['classifier']``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier", "head")
    return (names,) if isinstance(names, str) else tuple(names)


def recorded_classifier(model: nn.Module) -> tuple[str, ...]:
    """timm's classifier names where the model records a ``pretrained_cfg``; otherwise no head."""
    return timm_classifier_prefixes(model) if getattr(model, "pretrained_cfg", None) else ()
