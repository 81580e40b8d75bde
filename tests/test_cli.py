import json

import pytest

from repadapter.cli import main


def test_demo_writes_its_measurements_with_provenance(tmp_path, capsys):
    out = tmp_path / "demo.json"
    args = ["demo", "--steps", "2", "--train-images", "64", "--test-images", "32", "--latency-rounds", "2"]
    assert main([*args, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["demo"]["max_abs_logit_diff"] <= 1e-5
    assert data["provenance"]["command"]
    assert "merged vs unmerged" in capsys.readouterr().out


def test_params_prints_both_placements(capsys):
    assert main(["params", "--model", "vit_tiny_patch16_224"]) == 0
    out = capsys.readouterr().out
    assert "placement=attn   adapters 30,048" in out and "placement=block  adapters 60,096" in out


def test_verify_reports_and_records(tmp_path, capsys):
    out = tmp_path / "v.json"
    assert (
        main(
            ["verify", "--models", "vit_tiny_patch16_224:depth=1", "--placements", "attn", "--json", str(out)]
        )
        == 0
    )
    rows = json.loads(out.read_text())["exactness"]
    assert len(rows) == 1 and rows[0]["max_abs_logit_diff"] <= 1e-5


def test_bad_input_is_an_error_message_not_a_traceback(capsys):
    assert main(["verify", "--models", "vit_tiny_patch16_224:depth"]) == 2
    assert "repadapter: error: model spec" in capsys.readouterr().err
    assert main(["params", "--groups", "3"]) == 2
    assert "dim=8 is not divisible by groups=3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--placement", "ffn"])


def test_unknown_model_is_an_error_message(capsys):
    assert main(["params", "--model", "vit_nope"]) == 2
    assert "unknown model 'vit_nope'" in capsys.readouterr().err
