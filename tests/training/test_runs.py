import pytest
import yaml

from repadapter import RepAdapterError
from repadapter.training.config import TrainConfig
from repadapter.training.runs import finished_summary, refuse_overwrite, resumed_config, run_folder


def started(out, **settings):
    """A run folder as a start leaves it: its record, written by `run_folder`."""
    with run_folder(out, TrainConfig(**settings), {"data": "vtab:/d"}, resume=False, is_main=True):
        (out / "metrics.jsonl").write_text("{}\n")  # some output, so the folder stays
    return out


def test_a_failed_start_removes_the_folders_it_made_and_nothing_else(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(RuntimeError), run_folder(out, TrainConfig(), {}, resume=False, is_main=True):
        assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 1e-3
        (out / "final").mkdir()
        raise RuntimeError("the model would not build")
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(KeyboardInterrupt), run_folder(kept, TrainConfig(), {}, resume=False, is_main=True):
        raise KeyboardInterrupt
    assert kept.is_dir() and list(kept.iterdir()) == []


def test_a_start_that_wrote_output_keeps_its_folder_and_a_resume_never_removes(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), run_folder(out, TrainConfig(), {}, resume=False, is_main=True):
        (out / "checkpoint.pt").write_bytes(b"epoch 1")
        raise RuntimeError("diverged at epoch 2")
    assert (out / "checkpoint.pt").is_file() and (out / "config.yaml").is_file()
    with pytest.raises(RuntimeError), run_folder(out, TrainConfig(lr=5.0), {}, resume=True, is_main=True):
        raise RuntimeError("again")
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 1e-3


def test_a_folder_holding_only_a_record_may_be_started_again(tmp_path):
    out = tmp_path / "run"
    (out / "final").mkdir(parents=True)
    (out / "config.yaml").write_text("lr: 0.5\n")  # a start killed before it trained
    refuse_overwrite(out)
    (out / "final" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RepAdapterError, match="already holds a run; pass --resume"):
        refuse_overwrite(out)


def test_resume_compares_values_not_spellings_and_workers_only_where_they_draw(tmp_path):
    out = started(tmp_path / "run", scale="1", lr=0.002, augment="fewshot")
    cfg = resumed_config(out, {"scale": 1.0, "lr": 2e-3, "device": "cpu", "eval_batch_size": 7}, {})
    assert (cfg.scale, cfg.lr, cfg.device, cfg.eval_batch_size, cfg.augment) == (
        "1",
        0.002,
        "cpu",
        7,
        "fewshot",
    )
    with pytest.raises(RepAdapterError, match="--workers 0 differs from the run's 4"):
        resumed_config(out, {"workers": 0}, {})
    plain = started(tmp_path / "plain")
    assert resumed_config(plain, {"workers": 0}, {"data": "vtab:/d"}).workers == 0
    with pytest.raises(RepAdapterError, match="--data vtab:/e differs from the run's vtab:/d"):
        resumed_config(plain, {}, {"data": "vtab:/e"})
    (plain / "config.yaml").write_text("lr: [1\n")
    with pytest.raises(RepAdapterError, match="the run's record .* is not valid YAML"):
        resumed_config(plain, {}, {})


def test_a_finished_run_is_reused_only_for_its_own_recipe(tmp_path):
    import json

    run = tmp_path / "run"
    run.mkdir()
    recorded = TrainConfig(lr=2e-3, workers=4)
    (run / "summary.json").write_text(json.dumps({"test_score": 0.5, "config": recorded.to_dict()}))
    assert finished_summary(tmp_path / "none", recorded) is None
    # the workers, device and image cache do not change results
    assert (
        finished_summary(run, TrainConfig(lr=2e-3, workers=0, device="cpu", data_cache="off"))["test_score"]
        == 0.5
    )
    with pytest.raises(RepAdapterError, match=r"--lr 0.001 differs from the run's 0.002; --seed 1 differs"):
        finished_summary(run, TrainConfig(seed=1))
