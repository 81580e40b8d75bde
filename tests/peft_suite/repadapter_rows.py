"""A pytest plugin that adds RepAdapter rows to PEFT's own custom-model test matrix.

PEFT's ``tests/test_custom_models.py`` (not part of this repository; see README.md here) drives
every method through the same parametrized tests from a few module-level lists. This plugin
appends RepAdapter rows shaped like LoRA's to those lists when pytest imports that module, and
changes nothing else: the tests, their checks and their tolerances are PEFT's.
"""

from __future__ import annotations

from typing import Any

import pytest

from repadapter.peft_plugin import RepAdapterPeftConfig

# Like LoRA's rows: several target lists, modules_to_save, scale/dropout, Conv2d and MHA targets.
# ModelConv2D's conv reads 5 channels and ModelConv2D1x1's 1, so those rows use groups=1.
TEST_CASES = [
    ("Vanilla MLP 1 RepAdapter", "MLP", RepAdapterPeftConfig, {"target_modules": "lin0"}),
    ("Vanilla MLP 2 RepAdapter", "MLP", RepAdapterPeftConfig, {"target_modules": ["lin0"]}),
    ("Vanilla MLP 3 RepAdapter", "MLP", RepAdapterPeftConfig, {"target_modules": ["lin1"]}),
    ("Vanilla MLP 4 RepAdapter", "MLP", RepAdapterPeftConfig, {"target_modules": ["lin0", "lin1"]}),
    (
        "Vanilla MLP 5 RepAdapter",
        "MLP",
        RepAdapterPeftConfig,
        {"target_modules": ["lin0"], "modules_to_save": ["lin1"]},
    ),
    (
        "Vanilla MLP 6 RepAdapter",
        "MLP",
        RepAdapterPeftConfig,
        {"target_modules": ["lin0"], "scale": 0.5, "dropout": 0.1, "dim": 4},
    ),
    ("Vanilla MLP 7 RepAdapter", "MLP", RepAdapterPeftConfig, {"target_modules": ["lin0"], "groups": 1}),
    ("Conv2d 1 RepAdapter", "Conv2d", RepAdapterPeftConfig, {"target_modules": ["conv2d"], "groups": 1}),
    (
        "Conv2d 2 RepAdapter",
        "Conv2d",
        RepAdapterPeftConfig,
        {"target_modules": ["conv2d", "lin0"], "groups": 1},
    ),
    ("Conv2d1x1 RepAdapter", "Conv2d1x1", RepAdapterPeftConfig, {"target_modules": ["conv2d"], "groups": 1}),
    ("MHA 1 RepAdapter", "MHA", RepAdapterPeftConfig, {"target_modules": ["mha"]}),
    ("MHA 2 RepAdapter", "MHA", RepAdapterPeftConfig, {"target_modules": ["mha", "lin0"]}),
]

MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES = [
    (
        "RepAdapter Same",
        "repadapter",
        RepAdapterPeftConfig,
        {"target_modules": ["lin0"], "init_weights": False},
        {"target_modules": ["lin0"], "init_weights": False},
    ),
    (
        "RepAdapter Different",
        "repadapter",
        RepAdapterPeftConfig,
        {"target_modules": ["lin0"], "init_weights": False},
        {"target_modules": ["lin1"], "init_weights": False},
    ),
]

MIXED_ADAPTER_TEST_CASES = [
    (
        "RepAdapter mixed adapter",
        RepAdapterPeftConfig(target_modules=["lin0"], init_weights=False),
        RepAdapterPeftConfig(target_modules=["lin0"], dim=4, init_weights=False),
    ),
    (
        "RepAdapter mixed adapter different layers",
        RepAdapterPeftConfig(target_modules=["lin0"], init_weights=False),
        RepAdapterPeftConfig(target_modules=["lin1"], init_weights=False),
    ),
]


def add_rows(module: Any) -> None:
    """Append the rows above to PEFT's lists in ``module`` (in place, before parametrization)."""
    for name, rows in (
        ("TEST_CASES", TEST_CASES),
        ("MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES", MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES),
        ("MIXED_ADAPTER_TEST_CASES", MIXED_ADAPTER_TEST_CASES),
    ):
        getattr(module, name).extend(rows)
    module.ALL_PEFT_CONFIG_CLASSES.append(RepAdapterPeftConfig)


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makemodule(module_path: Any, parent: Any) -> Any:
    module = yield
    if module_path.name == "test_custom_models.py":
        add_rows(module.obj)
    return module
