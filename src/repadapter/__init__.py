"""repadapter: RepAdapter (Luo et al., 2023) for pretrained vision models.

Inject linear adapters, train them, save them as small files, then fold them into the
backbone so the deployed model is the vanilla architecture at the original speed.
"""

from repadapter._version import __version__
from repadapter.config import RepAdapterConfig
from repadapter.errors import RepAdapterError
from repadapter.layers.adapter import GroupedLinear, RepAdapter
from repadapter.tuner.adapter_files import load_adapter, save_adapter
from repadapter.tuner.hub import from_pretrained, save_pretrained
from repadapter.tuner.inject import inject
from repadapter.tuner.inspection import (
    ParameterCount,
    adapter_config,
    count_parameters,
    has_adapters,
    perturb_adapters,
)
from repadapter.tuner.merge import merge, unmerge

__all__ = [
    "GroupedLinear",
    "ParameterCount",
    "RepAdapter",
    "RepAdapterConfig",
    "RepAdapterError",
    "__version__",
    "adapter_config",
    "count_parameters",
    "from_pretrained",
    "has_adapters",
    "inject",
    "load_adapter",
    "merge",
    "perturb_adapters",
    "save_adapter",
    "save_pretrained",
    "unmerge",
]
