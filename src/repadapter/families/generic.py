"""Adapters on layers the user names (``RepAdapterConfig.target_modules``), on any model.

Each named layer gets its own adapter on its input, inside the layer's own forward, so no
other layer can see the adapted input: the placement is foldable by construction as long as
the layer is one an adapter folds into (`repadapter.layers.fold.projection`: nn.Linear, nn.Conv2d
with groups=1, nn.MultiheadAttention with a fused in-projection). Anything else a pattern
matches is refused by name. Layers that share an input (separate q, k, v) get one adapter
each; a model family (``placement=``) gives them one shared adapter instead.
"""

from __future__ import annotations

import re

from torch import nn

from repadapter.errors import RepAdapterError
from repadapter.families.base import Family, SiteSpec, recorded_classifier, register_family
from repadapter.layers.fold import projection


def _matches(pattern: str, name: str) -> bool:
    return re.fullmatch(rf"(?:.*\.)?(?:{pattern})", name) is not None


def target_sites(model: nn.Module, patterns: tuple[str, ...]) -> list[SiteSpec]:
    """One input-side site per module whose name matches a pattern, checked to be foldable."""
    names = [name for name, _ in model.named_modules() if name]
    for pattern in patterns:
        if not any(_matches(pattern, name) for name in names):
            raise RepAdapterError(
                f"target_modules pattern {pattern!r} matches no module of this model; "
                f"module names look like {names[:4]}"
            )
    sites = []
    for name, module in model.named_modules():
        if not name or not any(_matches(p, name) for p in patterns):
            continue
        try:
            projection(module)
        except RepAdapterError as err:
            raise RepAdapterError(
                f"target_modules matched {name}, but {err}. Narrow the pattern to such layers"
            ) from err
        sites.append(SiteSpec(host=name, consumers=("",), channels_first=isinstance(module, nn.Conv2d)))
    return sites


# Not recognised: `family_of` never picks it; models of no family use it with target_modules.
GENERIC = register_family(
    Family(
        name="generic",
        description="any model, adapters on the layers named by target_modules",
        matches=lambda model: False,
        sites=lambda model, placement: [],
        head_prefixes=recorded_classifier,
        library="any",
        placements=(),
    ),
    recognised=False,
)
