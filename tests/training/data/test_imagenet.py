"""ImageNet and its four test sets (domain generalization): the loaders on trees in the released
layouts, and the paper's protocol through the command line (train K-shot on ImageNet, eval on
V2, Sketch, A and R with --json)."""

from __future__ import annotations

import json
import pkgutil
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from repadapter.errors import RepAdapterError
from repadapter.training.data import load_task
from repadapter.training.data.imagenet import imagenet_synsets, subset_classes
from repadapter.training.tasks.base import restrict
from tests.fixtures import (
    IMAGENET_CLASSES,
    TINY_CLI_FLAGS,
    assert_refused,
    leftovers,
    make_imagenet_trees,
    make_vtab_task,
    run_cli,
    write_image,
)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    return make_imagenet_trees(tmp_path_factory.mktemp("imagenet"))


def _load(spec, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trees hold a few classes: each says so
        return load_task(spec, *args, **kwargs)


def test_labels_are_imagenet_1k_indices_from_timms_lists(trees):
    wnids = imagenet_synsets()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and len(set(wnids)) == 1000
    for kind in ("imagenet-a", "imagenet-r"):
        stem = kind.replace("-", "_")
        listed = pkgutil.get_data("timm.data", f"_info/{stem}_indices.txt").decode().split()
        assert subset_classes(kind) == tuple(int(i) for i in listed) and len(listed) == 200
    for kind in ("imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r"):
        task = _load(trees[kind])
        assert task.num_classes == 1000 and list(task.splits) == ["test"]
        for sample in task.split("test"):
            label = int(sample.path.stem.split("_")[1])  # the fixture writes the true index in the name
            assert sample.label == label
        assert task.scored_classes == (subset_classes(kind) if kind in ("imagenet-a", "imagenet-r") else ())
    assert _load(trees["imagenet-sketch"]).class_names == wnids


def test_imagenet_draws_k_shots_per_class_seeded(trees):
    full = _load(trees["imagenet"])
    assert full.name == "imagenet" and len(full.split("train")) == 3 * len(IMAGENET_CLASSES)
    assert len(full.split("test")) == 3 * len(IMAGENET_CLASSES)
    draws = {seed: _load(trees["imagenet"], 2, seed).split("train") for seed in range(6)}
    for train in draws.values():
        assert sorted(s.label for s in train) == sorted(IMAGENET_CLASSES * 2)
        assert {s.path for s in train} <= {s.path for s in full.split("train")}
    assert draws[0] == _load(trees["imagenet"], 2, 0).split("train")  # the same seed, the same draw
    assert len({tuple(s.path for s in train) for train in draws.values()}) > 1  # seeds differ
    assert _load(trees["imagenet"], 2, 0).name == "imagenet_2shot_seed0"
    only_test = _load(trees["imagenet"], 2, 0, "test")
    assert list(only_test.splits) == ["test"]  # eval reads (and checks) only the split it scores


def test_partial_copies_are_noted(trees):
    with pytest.warns(UserWarning, match="holds 2 of the 200 classes"):
        load_task(trees["imagenet-a"])


@pytest.mark.parametrize(
    ("kind", "folder", "phrase"),
    [
        ("imagenet-a", "n01440764", "not the WordNet id of one of the 200 ImageNet-A classes"),
        ("imagenet-sketch", "cat", "not the WordNet id of one of the 1000 ImageNet-1k classes"),
        ("imagenet-v2", "1000", "named by class index 0 .. 999"),
        ("imagenet-v2", "07", "named by class index 0 .. 999"),
    ],
)
def test_foreign_class_folders_are_refused(tmp_path, kind, folder, phrase):
    write_image(tmp_path / folder / "a.jpg", 0, np.random.default_rng(0))
    with pytest.raises(RepAdapterError, match=phrase):
        _load(f"{kind}:{tmp_path}")


def test_bad_images_too_few_shots_and_flat_val_are_refused(tmp_path, trees):
    root = tmp_path / "imagenet"
    rng = np.random.default_rng(0)
    wnid = imagenet_synsets()[6]
    for i in range(2):
        write_image(root / "train" / wnid / f"{i}.JPEG", 0, rng)
    write_image(root / "val" / "ILSVRC2012_val_00000001.JPEG", 0, rng)
    with pytest.raises(RepAdapterError, match="holds 2 images, fewer than --shots 3"):
        _load(f"imagenet:{root}", 3)
    with pytest.raises(RepAdapterError, match="val holds no class folders; expected layout"):
        _load(f"imagenet:{root}", 2)
    (root / "val" / wnid).mkdir()
    (root / "val" / wnid / "broken.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(RepAdapterError, match="broken.JPEG is not a readable image"):
        _load(f"imagenet:{root}", 2)


def test_restrict_moves_the_argmax_into_the_classes():
    logits = torch.tensor([[9.0, 1.0, 5.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    assert restrict(logits, [1, 2]).argmax(1).tolist() == [2, 2]
    assert restrict(logits, [1, 3]).argmax(1).tolist() == [1, 3]


def test_domain_generalization_protocol_through_the_cli(tmp_path, trees):
    """Train 1 epoch on 2-shot ImageNet, eval on the four test sets with --json; then a merged
    checkpoint whose head prefers tench (outside the 200) over class 6: ImageNet-A and -R score
    its argmax among their 200 classes (class 6), ImageNet-Sketch over all 1000 (tench)."""
    run = tmp_path / "run"
    trained = run_cli(
        "train", "--data", trees["imagenet"], "--shots", 2, "--fewshot-seed", 1, "--epochs", 1,
        "--scale", 1, "--out", run, *TINY_CLI_FLAGS, "--warmup-epochs", 0, "--batch-size", 4,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "imagenet_2shot_seed1: test accuracy" in trained.stdout
    assert "train holds 3 of the 1000 classes" in trained.stderr
    model = [
        "--model",
        "vit_tiny_patch16_224",
        "--no-pretrained",
        "--img-size",
        32,
        "--workers",
        0,
        "--device",
        "cpu",
    ]
    variants = ["imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r"]
    data = [arg for kind in variants for arg in ("--data", trees[kind])]
    scores = tmp_path / "scores.json"
    evaluated = run_cli("eval", *model, "--adapter", run / "adapter.safetensors", *data, "--json", scores)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert leftovers(tmp_path) == []  # the JSON was written whole, through a renamed temporary file
    records = json.loads(scores.read_text())["results"]
    assert [r["name"] for r in records] == ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    assert [r["data"] for r in records] == [trees[kind] for kind in variants]
    assert [r["samples"] for r in records] == [9, 9, 6, 6]
    for record, line in zip(records, evaluated.stdout.splitlines(), strict=False):
        assert record["metric"] == "accuracy" and record["split"] == "test"
        assert f"{record['name']} test: accuracy {record['score']:.2f}%" in line
        assert round(record["score"] * record["samples"] / 100, 6).is_integer()  # a share of the images, in %
    assert records[2]["scored_classes"] == list(subset_classes("imagenet-a"))
    assert records[3]["scored_classes"] == list(subset_classes("imagenet-r"))
    assert records[0]["scored_classes"] is None and records[1]["scored_classes"] is None

    merged = tmp_path / "merged.safetensors"
    done = run_cli("merge", *model[:5], "--adapter", run / "adapter.safetensors", "--out", merged)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = load_file(merged)
    weights["head.weight"] = torch.zeros_like(weights["head.weight"])
    weights["head.bias"] = torch.zeros_like(weights["head.bias"])
    weights["head.bias"][0] = 10.0  # tench: not among ImageNet-A's or -R's classes
    weights["head.bias"][6] = 5.0  # n01498041: among both
    assert 0 not in subset_classes("imagenet-a") and 0 not in subset_classes("imagenet-r")
    save_file(weights, tmp_path / "biased.safetensors")
    # the -A tree read as a Sketch tree (wnid folders too): the same images, scored over all 1000
    same_images = f"imagenet-sketch:{trees['imagenet-a'].partition(':')[2]}"
    data = ["--data", same_images, "--data", trees["imagenet-a"], "--data", trees["imagenet-r"]]
    evaluated = run_cli("eval", *model, "--weights", tmp_path / "biased.safetensors", *data, "--json", scores)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    by_name = {r["name"]: r["score"] for r in json.loads(scores.read_text())["results"]}
    # over all 1000 classes every image is predicted tench: none of the images of classes 6 and 11 is right
    assert by_name["imagenet_sketch"] == 0.0
    # among -A's and -R's 200 every image is predicted 6 (tench is not one of them): right for half
    assert by_name["imagenet_a"] == pytest.approx(50.0) and by_name["imagenet_r"] == pytest.approx(50.0)


def _refused(run, *phrases: str) -> None:
    """`assert_refused` after the notes that loading the partial trees prints."""
    notes = [line for line in run.stderr.splitlines() if line.startswith("repadapter: note: ")]
    assert all("of the data set" in note or "classes of its data set" in note for note in notes), notes
    run.stderr = "\n".join(line for line in run.stderr.splitlines() if line not in notes)
    assert_refused(run, *phrases)


def test_eval_and_train_refusals(tmp_path, trees):
    model = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--img-size", 32, "--device", "cpu"]
    adapter = ["--adapter", tmp_path / "never_read.safetensors"]  # each refusal comes before it is read
    vtab = f"vtab:{make_vtab_task(tmp_path, 'eurosat', train=2, val=2, test=2)}"
    mixed = run_cli("eval", *model, *adapter, "--data", trees["imagenet-a"], "--data", vtab)
    _refused(
        mixed, f"--data {vtab} holds a classification task of 10 classes", "evaluate them in separate runs"
    )
    inside = f"{trees['imagenet-a'].partition(':')[2]}/scores.json"
    _refused(
        run_cli("eval", *model, *adapter, "--data", trees["imagenet-a"], "--json", inside),
        "--json",
        "overlap",
    )
    test_only = run_cli(
        "train", "--data", trees["imagenet-r"], "--scale", 1, "--out", tmp_path / "r", *TINY_CLI_FLAGS
    )
    _refused(test_only, "has no 'train' split")
