import json

import pytest
import torch

from repadapter import RepAdapterError
from repadapter.training import trainer
from repadapter.training.data import load_vtab_task
from repadapter.training.data.transforms import preprocessing
from repadapter.training.distributed import DistContext
from repadapter.training.protocol import build_model
from repadapter.training.trainer import GlobalBatchSampler, TrainingDivergedError, fit, seed_everything
from tests.fixtures import make_vtab_task, tiny_recipe

CPU = DistContext(0, 1, torch.device("cpu"))


def test_processes_share_out_the_same_global_batches():
    single = list(GlobalBatchSampler(22, 8, 0, 1, seed=3))
    ranks = [list(GlobalBatchSampler(22, 8, r, 2, seed=3)) for r in (0, 1)]
    assert len(single) == 16  # two full batches; the rest is dropped
    for k in range(2):
        global_batch = set(single[8 * k : 8 * k + 8])
        assert set(ranks[0][4 * k : 4 * k + 4]) | set(ranks[1][4 * k : 4 * k + 4]) == global_batch
    with pytest.raises(RepAdapterError, match="batch size 8 is not divisible by the 3 processes"):
        GlobalBatchSampler(22, 8, 0, 3, seed=3)


def _train(model, task, cfg, run_dir, evals=None, **kwargs):
    split = {name: task.split(name) for name in evals or ()}
    return fit(
        model,
        task.num_classes,
        task.split("train"),
        split,
        {2, 4},
        cfg,
        preprocessing(model),
        CPU,
        run_dir,
        progress=False,
        **kwargs,
    )


def _fit(task, cfg, run_dir):
    seed_everything(cfg.seed)
    model = build_model(cfg, task.num_classes, 1.0)
    return model, _train(model, task, cfg, run_dir, evals=("val",))


def test_a_killed_run_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=24, val=8))
    cfg = tiny_recipe()  # adapter dropout and drop-path on: the RNG state must be restored too
    model_a, result_a = _fit(task, cfg, tmp_path / "a")

    writes = []
    real = trainer._write_metrics

    def killed_after_two_epochs(run_dir, history):
        writes.append(len(history))
        if len(history) == 2:
            raise KeyboardInterrupt
        real(run_dir, history)

    monkeypatch.setattr(trainer, "_write_metrics", killed_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        _fit(task, cfg, tmp_path / "b")
    monkeypatch.setattr(trainer, "_write_metrics", real)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    model_b, result_b = _fit(task, cfg, tmp_path / "b")

    assert [r["epoch"] for r in result_b.history] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in result_b.history] == [r["train_loss"] for r in result_a.history]
    assert result_b.evaluations == result_a.evaluations
    trained = [n for n, p in model_a.named_parameters() if p.requires_grad]
    assert all(torch.equal(model_a.state_dict()[n], model_b.state_dict()[n]) for n in trained)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8))
    cfg = tiny_recipe()
    seed_everything(cfg.seed)
    model = build_model(cfg, task.num_classes, 1.0)
    calls = []

    def poison(module, args):  # the third training batch (epoch 2) gets a NaN input
        if module.training:
            calls.append(1)
            if len(calls) == 3:
                return (args[0] * float("nan"),)
        return None

    model.register_forward_pre_hook(poison)
    with pytest.raises(TrainingDivergedError, match="became nan at epoch 2, step 1.*checkpoint.pt"):
        _train(model, task, cfg, tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in saved["trainable"].values())


def test_a_checkpoint_of_another_run_is_not_reused(tmp_path):
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8))
    cfg = tiny_recipe(epochs=2)
    _fit(task, cfg, tmp_path / "run")
    seed_everything(cfg.seed)
    model = build_model(cfg, task.num_classes, 1.0)
    with pytest.raises(RepAdapterError, match="belongs to another run"):
        _train(model, task, cfg, tmp_path / "run", stop_epoch=1)


def test_a_checkpoint_of_another_recipe_is_not_continued(tmp_path):
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8))
    _fit(task, tiny_recipe(epochs=2), tmp_path / "run")
    with pytest.raises(
        RepAdapterError, match="was made with another recipe: --lr 0.01 differs from the run's 0.001"
    ):
        _fit(task, tiny_recipe(epochs=2, lr=1e-2), tmp_path / "run")


def test_bf16_autocast_trains_and_fp16_needs_cuda(tmp_path):
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8))
    _, result = _fit(task, tiny_recipe(amp="bf16", epochs=2), tmp_path / "bf16")
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)
    with pytest.raises(RepAdapterError, match="amp fp16 needs a CUDA device"):
        _fit(task, tiny_recipe(amp="fp16", epochs=2), tmp_path / "fp16")


def test_compile_wraps_the_training_model(tmp_path, monkeypatch):
    # Inductor takes minutes on 2 cores; dynamo's eager backend still traces the injected model.
    compiled = []
    real_compile = torch.compile

    def eager_compile(model):
        compiled.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8))
    model, result = _fit(task, tiny_recipe(compile=True, epochs=2), tmp_path / "c")
    assert compiled and compiled[0] is model
    assert len(result.history) == 2


def test_grad_checkpointing_trains_to_the_same_numbers(tmp_path):
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8))
    plain, result = _fit(task, tiny_recipe(epochs=2), tmp_path / "plain")
    checkpointed, result_ckpt = _fit(task, tiny_recipe(epochs=2, grad_checkpointing=True), tmp_path / "ckpt")
    assert checkpointed.grad_checkpointing and not plain.grad_checkpointing
    assert [r["train_loss"] for r in result_ckpt.history] == pytest.approx(
        [r["train_loss"] for r in result.history], rel=1e-5
    )
    trained = {n: p for n, p in plain.named_parameters() if p.requires_grad}
    for name, param in checkpointed.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param, trained[name], rtol=1e-4, atol=1e-6, msg=name)


def test_cached_images_train_to_the_same_numbers(tmp_path, monkeypatch):
    from repadapter.training.data import cache

    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "cache")
    task = load_vtab_task(make_vtab_task(tmp_path, "eurosat", train=16, val=8))
    runs = {
        mode: _fit(task, tiny_recipe(epochs=2, data_cache=mode), tmp_path / mode)
        for mode in cache.CACHE_MODES
    }
    off = runs.pop("off")[1]
    for mode, (_, result) in runs.items():
        assert [r["train_loss"] for r in result.history] == [r["train_loss"] for r in off.history], mode
        assert result.evaluations == off.evaluations, mode
