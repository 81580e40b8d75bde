import json

import pytest
import torch

from repadapter import RepAdapterError
from repadapter.training.config import SCALE_CANDIDATES
from repadapter.training.data import load_task, load_vtab_task
from repadapter.training.distributed import DistContext
from repadapter.training.protocol import HONEST, candidate_scales, run_task, trained_model
from repadapter.training.tasks import task_kind
from repadapter.training.trainer import evaluate
from tests.fixtures import make_fewshot_dataset, make_image_folder, make_vtab_task, tiny_recipe

CPU = DistContext(0, 1, torch.device("cpu"))


def test_candidate_scales(tmp_path):
    task = load_vtab_task(make_vtab_task(tmp_path, "dtd"))
    assert candidate_scales(task, tiny_recipe(scale="auto")) == list(SCALE_CANDIDATES)
    assert candidate_scales(task, tiny_recipe(scale="paper", placement="block")) == [1.0]
    assert candidate_scales(task, tiny_recipe(scale="paper", placement="attn")) == [0.1]
    assert candidate_scales(task, tiny_recipe(scale="2.5")) == [2.5]
    folder = load_task(f"folder:{make_image_folder(tmp_path / 'mine')}")
    with pytest.raises(RepAdapterError, match="--scale paper needs a VTAB-1k task"):
        candidate_scales(folder, tiny_recipe(scale="paper"))


def test_honest_protocol_selects_on_val_retrains_and_tests_once(tmp_path):
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8, test=12))
    cfg = tiny_recipe(scale="auto", epochs=2, eval_every=1)
    summary = run_task(task, cfg, tmp_path / "run", CPU, progress=False)
    assert summary["protocol"] == HONEST
    assert [s["scale"] for s in summary["search"]] == list(SCALE_CANDIDATES)
    best = max(summary["search"], key=lambda s: s["val_score"])
    assert (summary["scale"], summary["epoch"]) == (best["scale"], best["best_epoch"])
    assert all("test" not in s["evaluations"] for s in summary["search"])
    final = [
        json.loads(line) for line in (tmp_path / "run" / "final" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(final) == summary["epoch"] and all("test_accuracy" not in r for r in final)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["provenance"]["git_commit"] is None or len(saved["provenance"]["git_commit"]) == 40
    assert saved["preprocessing"]["normalization"] == "model"
    assert 0 < saved["trained_percent_of_backbone"] < 5 and saved["peak_memory_bytes"] > 0
    assert (tmp_path / "run" / "adapter.safetensors").is_file()


def test_select_on_test_is_labelled(tmp_path):
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat"))
    summary = run_task(
        task, tiny_recipe(selection="test", eval_every=1, epochs=2), tmp_path / "r", CPU, progress=False
    )
    assert summary["protocol"].startswith("SELECT-ON-TEST (official RepAdapter protocol)")
    assert summary["test_score"] == max(acc for _, acc in summary["search"][0]["evaluations"]["test"])


def test_without_val_split_auto_scale_is_refused_and_a_fixed_scale_runs(tmp_path):
    folder = make_fewshot_dataset(tmp_path, "oxford_pets", shots=4, classes=2, test=6)
    task = load_task(f"fewshot:{folder}", shots=4, fewshot_seed=0)
    with pytest.raises(RepAdapterError, match="without a validation split cannot choose a scale"):
        run_task(task, tiny_recipe(scale="auto"), tmp_path / "a", CPU, progress=False)
    summary = run_task(task, tiny_recipe(augment="fewshot", epochs=2), tmp_path / "b", CPU, progress=False)
    assert summary["protocol"].startswith("final epoch")
    history = [
        json.loads(line) for line in (tmp_path / "b" / "final" / "metrics.jsonl").read_text().splitlines()
    ]
    assert history[0]["train_acc"] is None  # mixup targets: no plain training accuracy


def test_selection_none_trains_on_train_and_val_once_and_tests_once(tmp_path):
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8, test=12))
    summary = run_task(task, tiny_recipe(selection="none", epochs=2), tmp_path / "run", CPU, progress=False)
    assert summary["protocol"].startswith("final epoch") and summary["search"] == []
    assert summary["epoch"] == 2 and not (tmp_path / "run" / "search_scale_1").exists()
    with pytest.raises(RepAdapterError, match="--selection none without a validation split"):
        run_task(task, tiny_recipe(selection="none", scale="auto"), tmp_path / "b", CPU, progress=False)


@pytest.mark.parametrize(("method", "trained"), [("linear", {"head.weight", "head.bias"}), ("full", None)])
def test_methods_without_adapters_train_what_they_say_and_save_it(tmp_path, method, trained):
    from safetensors.torch import load_file

    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8, test=12))
    cfg = tiny_recipe(method=method, selection="none", epochs=1, warmup_epochs=0)
    summary = run_task(task, cfg, tmp_path / "run", CPU, progress=False)
    saved = load_file(tmp_path / "run" / "trained.safetensors")
    assert summary["method"] == method and summary["scale"] is None and summary["adapter_params"] == 0
    if trained is not None:
        assert set(saved) == trained
    else:
        assert summary["trained_params"] == summary["backbone_params"]
    assert summary["trained_params"] == sum(t.numel() for t in saved.values())


def test_trained_tensors_load_back_into_the_model_they_were_trained_as(tmp_path):
    """A method without adapters saves trained.safetensors; load_trained rebuilds its seeded base,
    prepares it by the method and scores what the run scored, and refuses another base."""
    from repadapter.files import read_tensor_file_with_metadata
    from repadapter.training.protocol import load_trained
    from repadapter.training.trainer import evaluate

    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8, test=12))
    cfg = tiny_recipe(method="lora", selection="none", scale="2", epochs=2, seed=3)
    summary = run_task(task, cfg, tmp_path / "run", CPU, progress=False)
    path = tmp_path / "run" / "trained.safetensors"
    metadata, tensors = read_tensor_file_with_metadata(path)
    model = load_trained(path, metadata, tensors, "classification", task.num_classes, cfg.model)
    assert model.blocks[0].attn.qkv.scale == 2.0
    scores = evaluate(model.eval(), task.split("test"), task.num_classes, summary["preprocessing"], cfg, CPU)
    assert scores["accuracy"] == summary["test_score"]

    with pytest.raises(RepAdapterError, match="holds a lora run of --model vit_tiny_patch16_224 on a"):
        load_trained(path, metadata, tensors, "classification", task.num_classes, "vit_small_patch16_224")
    other = {**metadata, "config": json.dumps(json.loads(metadata["config"]) | {"seed": 4})}
    with pytest.raises(RepAdapterError, match="was trained on another backbone.*a random init, seed 4"):
        load_trained(path, other, tensors, "classification", task.num_classes, cfg.model)


@pytest.mark.parametrize("method", ["linear", "lora", "repadapter"])
def test_a_finished_run_is_rebuilt_from_its_files_and_scores_as_it_did(tmp_path, method):
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8, test=12, classes=3))
    cfg = tiny_recipe(method=method, selection="none", epochs=2, warmup_epochs=0, lr=0.01)
    summary = run_task(task, cfg, tmp_path / "run", CPU, progress=False)
    model = trained_model(tmp_path / "run", cfg, task.num_classes)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and len(trained) < len(list(model.parameters()))  # the method's, not every tensor
    prep = task_kind(cfg.task).preprocessing(model, cfg.normalization)
    assert evaluate(model, task.split("test"), task.num_classes, prep, cfg, CPU) == summary["test_scores"]
    with pytest.raises(RepAdapterError, match="another recipe"):
        trained_model(tmp_path / "run", tiny_recipe(method=method, selection="none", epochs=3), 3)
    with pytest.raises(RepAdapterError, match="no finished run"):
        trained_model(tmp_path / "elsewhere", cfg, task.num_classes)
    if method != "repadapter":  # a trained-tensor file that lacks one of the method's tensors
        from repadapter.files import read_tensor_file_with_metadata, save_tensor_file

        path = tmp_path / "run" / "trained.safetensors"
        metadata, saved = read_tensor_file_with_metadata(path)
        save_tensor_file(path, {k: v for k, v in saved.items() if k != "head.bias"}, metadata)
        with pytest.raises(RepAdapterError, match="does not hold what --method"):
            trained_model(tmp_path / "run", cfg, task.num_classes)
