"""The few-shot fine-grained layout of NOAH and the official RepAdapter code.

``<root>/<dataset>/images/train/`` and ``images/test/`` hold the images;
``train_meta.list.num_shot_<K>.seed_<S>`` lists the K-shot training images of seed S
(relative to ``images/train``) and ``test_meta.list`` the test images (relative to
``images/test``). This layout has no validation list, so runs on it train for the full
schedule and report the final test accuracy (or, with --selection test, the official protocol).
"""

from __future__ import annotations

import os

from repadapter.errors import RepAdapterError
from repadapter.training.data.lists import TaskData, read_list, require_dir

FEWSHOT_CLASSES = {
    "fgvc_aircraft": 100,
    "food101": 101,
    "oxford_flowers102": 102,
    "oxford_pets": 37,
    "stanford_cars": 196,
}
SHOTS = (1, 2, 4, 8, 16)
SEEDS = (0, 1, 2)
LAYOUT = (
    "<dataset>/images/{train,test}/..., <dataset>/train_meta.list.num_shot_<K>.seed_<S>, "
    "<dataset>/test_meta.list"
)


def _canonical(name: str) -> str:
    return name.lower().replace("-", "_").replace("standford", "stanford").replace("food_101", "food101")


def load_fewshot_task(dataset_dir: str | os.PathLike[str], shots: int, seed: int) -> TaskData:
    """Read one few-shot dataset folder at ``shots`` shots and split seed ``seed``."""
    folder = require_dir(dataset_dir, "few-shot dataset", LAYOUT)
    name = _canonical(folder.name)
    if name not in FEWSHOT_CLASSES:
        raise RepAdapterError(
            f"unknown few-shot dataset folder {folder.name!r}; expected one of {', '.join(FEWSHOT_CLASSES)}"
        )
    if shots not in SHOTS or seed not in SEEDS:
        raise RepAdapterError(f"few-shot runs use shots in {SHOTS} and seeds in {SEEDS}; got {shots}, {seed}")
    classes = FEWSHOT_CLASSES[name]
    train = read_list(
        folder / f"train_meta.list.num_shot_{shots}.seed_{seed}", folder / "images" / "train", classes
    )
    test = read_list(folder / "test_meta.list", folder / "images" / "test", classes)
    return TaskData(
        f"{name}_{shots}shot_seed{seed}", classes, {"train": train, "trainval": train, "test": test}
    )
