"""`repadapter bench probe`: converged linear probes on frozen features, per backbone."""

import json

import torch

from repadapter.cli import main
from repadapter.families.factory import IN_HOUSE_VIT, WEIGHTS_DIR
from repadapter_lab.benchmarks.probe import fit_logistic, render_probe
from tests.fixtures import make_vtab_task


def test_logistic_regression_converges_and_the_penalty_shrinks_it():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    y = (x @ torch.randn(5, 3, generator=g)).argmax(-1)  # three classes, linearly separable
    free = fit_logistic(x, y, 3, l2=1e-6)
    assert (free(x.double()).argmax(-1) == y).all()
    strong = fit_logistic(x, y, 3, l2=10.0)
    assert strong.weight.norm() < free.weight.norm() / 10


def test_probe_rows_for_pretrained_random_and_a_checkpoint(tmp_path, capsys):
    for task, classes in (("cifar", 3), ("dsprites_loc", 2)):
        make_vtab_task(tmp_path / "suite", task, train=12, val=6, test=9, classes=classes)
    weights = WEIGHTS_DIR / f"{IN_HOUSE_VIT}.safetensors"
    out = tmp_path / "probe"
    args = ["bench", "probe", "--root", str(tmp_path / "suite"), "--out", str(out)]
    assert main([*args, "--checkpoint", f"shipped={weights}"]) == 0
    result = json.loads((out / "probe.json").read_text())
    rows = result["backbones"]
    assert list(rows) == ["pretrained", "random-init", "shipped"]
    assert rows["shipped"]["tasks"] == rows["pretrained"]["tasks"]  # the same weights, read from a file
    for row in rows.values():
        assert set(row["tasks"]) == {"cifar", "dsprites_loc"} and row["group_means"]["specialized"] is None
        assert all(run["l2"] in (1e-4, 1e-3, 1e-2, 1e-1) for run in row["runs"])
    assert (out / "probe.md").read_text() == render_probe(result) and result["provenance"]["command"]


def test_a_checkpoint_without_a_label_is_refused(tmp_path, capsys):
    args = ["bench", "probe", "--out", str(tmp_path / "probe"), "--checkpoint", "weights.safetensors"]
    assert main(args) == 2
    assert "expected LABEL=FILE" in capsys.readouterr().err and not (tmp_path / "probe").exists()
