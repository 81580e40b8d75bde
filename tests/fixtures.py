"""Small data trees in the exact on-disk layouts the loaders read, made by the tests.

Each image is a 16x16 PNG whose colour says its class (plus noise), so a tiny ViT learns it in
a few epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240]]
)


def write_image(path: Path, label: int, rng: np.random.Generator, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = PALETTE[label % len(PALETTE)] + rng.normal(0, 25, (size, size, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


def _samples(folder: Path, prefix: str, count: int, classes: int, rng: np.random.Generator) -> list[str]:
    lines = []
    for i in range(count):
        label = i % classes
        rel = f"images/{prefix}_{i:04d}.png"
        write_image(folder / rel, label, rng)
        lines.append(f"{rel} {label}")
    return lines


def make_vtab_task(
    root: Path, task: str, train: int = 16, val: int = 8, test: int = 12, classes: int = 2, seed: int = 0
) -> Path:
    """``<root>/<task>/`` with images and the four VTAB-1k split lists."""
    rng = np.random.default_rng(seed)
    folder = root / task
    train_lines = _samples(folder, "train", train, classes, rng)
    val_lines = _samples(folder, "val", val, classes, rng)
    test_lines = _samples(folder, "test", test, classes, rng)
    for name, lines in [
        ("train800.txt", train_lines),
        ("val200.txt", val_lines),
        ("train800val200.txt", train_lines + val_lines),
        ("test.txt", test_lines),
    ]:
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def make_fewshot_dataset(
    root: Path, name: str = "fgvc-aircraft", shots: int = 2, seed: int = 0, classes: int = 3, test: int = 9
) -> Path:
    """``<root>/<name>/images/{train,test}`` with the K-shot train list and the test list."""
    rng = np.random.default_rng(seed)
    folder = root / name
    train_lines, test_lines = [], []
    for c in range(classes):
        for k in range(shots):
            rel = f"class{c}/img{k}.png"
            write_image(folder / "images" / "train" / rel, c, rng)
            train_lines.append(f"{rel} {c}")
    for i in range(test):
        rel = f"class{i % classes}/test{i}.png"
        write_image(folder / "images" / "test" / rel, i % classes, rng)
        test_lines.append(f"{rel} {i % classes}")
    (folder / f"train_meta.list.num_shot_{shots}.seed_{seed}").write_text("\n".join(train_lines) + "\n")
    (folder / "test_meta.list").write_text("\n".join(test_lines) + "\n")
    return folder


def make_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for label, name in enumerate(classes):
            for i in range(per_class):
                write_image(root / split / name / f"{i}.png", label, rng)
    return root


def make_csv_folder(root: Path, labels: tuple[str, ...] = ("cat", "dog"), per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        rows = ["path,label"]
        for label, name in enumerate(labels):
            for i in range(per_class):
                rel = f"img/{split}_{name}_{i}.png"
                write_image(root / rel, label, rng)
                rows.append(f"{rel},{name}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def tiny_recipe(**overrides):
    """A recipe that trains a 32-pixel ViT-Tiny on the fixture trees in seconds."""
    from repadapter.training.config import TrainConfig

    settings = dict(
        model="vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        epochs=4,
        warmup_epochs=1,
        batch_size=8,
        eval_batch_size=16,
        eval_every=2,
        workers=0,
        scale="1",
        device="cpu",
    )
    return TrainConfig(**{**settings, **overrides})


# Command-line flags for the same tiny recipe, for tests that run the CLI in a subprocess.
TINY_CLI_FLAGS = [
    "--model",
    "vit_tiny_patch16_224",
    "--no-pretrained",
    "--img-size",
    "32",
    "--warmup-epochs",
    "1",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--quiet",
]

# Models with packaged weights, which eval, merge and export rebuild without a hub.
IMAGE_MODEL = "vit_tiny6_patch4_32.fmnist"
VIDEO_MODEL = "videomae_tiny6_patch4_32.fmnist"


def run_cli(*args, timeout: int = 600):
    """``repadapter ARGS`` in a subprocess, as a user runs it."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "repadapter.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def assert_refused(run, *phrases: str) -> None:
    """Exit code 2 and a `repadapter: error:` message of one or two lines holding ``phrases``."""
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert 1 <= len(lines) <= 2 and lines[0].startswith("repadapter: error: "), run.stderr
    for phrase in phrases:
        assert phrase in run.stderr, (phrase, run.stderr)


def leftovers(root: Path) -> list[Path]:
    """Temporary files of interrupted or failed writes under ``root``."""
    return [p for p in root.rglob("*") if p.name.endswith((".partial", ".tmp")) or p.name.startswith(".tmp")]


class Payload:
    """Unpickling this creates ``marker``: the proof that a reader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path, archive: bool = True) -> Path:
    """A planted pickle at ``path``: a ``torch.save`` archive (or a bare pickle) of a state dict
    whose one entry runs code when unpickled."""
    import pickle

    import torch

    state = {"state_dict": {"weight": Payload(marker)}}
    if archive:
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    return path


def tiny_hf_vit(num_labels: int):
    """A seeded 2-layer, 64-wide Hugging Face ViTForImageClassification at 32 px."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=num_labels,
    )
    return transformers.ViTForImageClassification(config)


# A handful of real ImageNet-1k classes, by class index: tench (0) is in neither ImageNet-A nor
# -R; 6 (n01498041) and 11 (n01531178) are in both.
IMAGENET_CLASSES = (0, 6, 11)


def make_imagenet_trees(root: Path, per_class: int = 3, seed: int = 0) -> dict[str, str]:
    """ImageNet and its four test sets in their released layouts, holding the classes
    ``IMAGENET_CLASSES`` (the -A and -R trees only those of their 200): ``{kind: --data value}``."""
    from repadapter.training.data.imagenet import imagenet_synsets

    rng = np.random.default_rng(seed)
    wnids = imagenet_synsets()
    subset = [c for c in IMAGENET_CLASSES if c != 0]
    layouts = {
        "imagenet": [(f"train/{wnids[c]}", c, ".JPEG") for c in IMAGENET_CLASSES]
        + [(f"val/{wnids[c]}", c, ".JPEG") for c in IMAGENET_CLASSES],
        "imagenet-v2": [(str(c), c, ".jpeg") for c in IMAGENET_CLASSES],
        "imagenet-sketch": [(wnids[c], c, ".JPEG") for c in IMAGENET_CLASSES],
        "imagenet-a": [(wnids[c], c, ".jpg") for c in subset],
        "imagenet-r": [(wnids[c], c, ".jpg") for c in subset],
    }
    specs = {}
    for kind, folders in layouts.items():
        for folder, label, suffix in folders:
            for i in range(per_class):
                write_image(
                    root / kind / folder / f"{kind}_{label}_{i}{suffix}", IMAGENET_CLASSES.index(label), rng
                )
        specs[kind] = f"{kind}:{root / kind}"
    return specs
