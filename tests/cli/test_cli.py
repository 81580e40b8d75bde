import json

import pytest

from repadapter.cli import main


def test_demo_writes_its_measurements_with_provenance(tmp_path, capsys):
    out = tmp_path / "demo.json"
    sizes = ["--train-images", "16", "--val-images", "8", "--test-images", "16", "--batch-size", "8"]
    args = [
        "demo",
        "--data-root",
        str(tmp_path / "offline"),
        *sizes,
        "--epochs",
        "1",
        "--latency-rounds",
        "2",
    ]
    assert main([*args, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["demo"]["max_abs_logit_diff"] <= 1e-5
    assert data["provenance"]["command"]
    assert "merged vs unmerged" in capsys.readouterr().out


def test_params_prints_each_placement_of_the_family(capsys):
    assert main(["params", "--model", "vit_tiny_patch16_224"]) == 0
    out = capsys.readouterr().out
    assert "placement=attn    adapters 30,048" in out and "placement=block   adapters 60,096" in out
    assert main(["params", "--model", "convnext_atto"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:]] == [
        "placement=block",
        "placement=io",
        "placement=dwconv",
    ]


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


def test_train_merge_eval_from_a_local_base_checkpoint(tmp_path, capsys):
    import timm
    import torch
    from safetensors.torch import load_file, save_file

    from tests.fixtures import make_vtab_task

    torch.manual_seed(0)
    base = timm.create_model("vit_tiny_patch16_224", img_size=32)  # 1000 classes: timm drops that head
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(tmp_path / "base.safetensors"))
    make_vtab_task(tmp_path, "eurosat", train=16, val=8, test=8)
    (tmp_path / "recipe.yaml").write_text(
        "epochs: 2\nwarmup_epochs: 1\nbatch_size: 8\nscale: 1\nworkers: 0\n"
    )
    model_args = ["--model", "vit_tiny_patch16_224", "--checkpoint", str(tmp_path / "base.safetensors")]
    model_args += ["--img-size", "32"]
    data = ["--data", f"vtab:{tmp_path / 'eurosat'}"]
    run = tmp_path / "run"
    train = ["train", *data, *model_args, "--config", str(tmp_path / "recipe.yaml"), "--device", "cpu"]
    assert main([*train, "--out", str(run), "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert "epochs: 2" in (run / "config.yaml").read_text()

    deploy = tmp_path / "deploy.safetensors"
    assert (
        main(["merge", *model_args, "--adapter", str(run / "adapter.safetensors"), "--out", str(deploy)]) == 0
    )
    vanilla = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10)
    vanilla.load_state_dict(load_file(deploy), strict=True)  # a plain timm model
    capsys.readouterr()
    adapter_eval = [
        "eval",
        *data,
        *model_args,
        "--adapter",
        str(run / "adapter.safetensors"),
        "--workers",
        "0",
    ]
    merged_eval = [
        "eval",
        *data,
        "--model",
        "vit_tiny_patch16_224",
        "--img-size",
        "32",
        "--weights",
        str(deploy),
    ]
    assert main(adapter_eval) == 0 and main([*merged_eval, "--workers", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == lines[1]  # the same accuracy before and after merging
    summary = json.loads((run / "summary.json").read_text())
    assert f"{100 * summary['test_score']:.2f}%" in lines[0]


def test_train_refuses_to_overwrite_and_explains_bad_input(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("keep me")
    from tests.fixtures import make_vtab_task

    make_vtab_task(tmp_path, "dtd")
    args = ["train", "--data", f"vtab:{tmp_path / 'dtd'}", "--no-pretrained", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert (
        "already holds files but no run (it has no config.yaml); pick another --out"
        in capsys.readouterr().err
    )
    assert (tmp_path / "run" / "old.txt").read_text() == "keep me"
    assert main(["train", "--data", "vtab", "--no-pretrained"]) == 2
    assert "is not 'kind:path'" in capsys.readouterr().err
    assert main(["eval", "--model", "vit_tiny_patch16_224", "--data", f"vtab:{tmp_path / 'dtd'}"]) == 2
    assert "exactly one of --adapter" in capsys.readouterr().err


def test_export_command_writes_checked_onnx_and_torchscript(tmp_path, capsys):
    import timm
    import torch
    from safetensors.torch import save_file

    import repadapter as ra

    torch.manual_seed(0)
    base = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=4)
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(tmp_path / "base.safetensors"))
    ra.save_adapter(ra.perturb_adapters(ra.inject(base)), tmp_path / "a.safetensors")
    args = ["export", "--model", "vit_tiny_patch16_224", "--checkpoint", str(tmp_path / "base.safetensors")]
    args += ["--img-size", "32", "--adapter", str(tmp_path / "a.safetensors")]
    assert main([*args, "--onnx", str(tmp_path / "m.onnx"), "--torchscript", str(tmp_path / "m.pt")]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime vs PyTorch max |delta logits|" in out and "TorchScript vs PyTorch" in out
    assert (tmp_path / "m.onnx").stat().st_size > 1_000_000 and (tmp_path / "m.pt").is_file()
    assert main(args) == 2
    assert "give --onnx FILE and/or --torchscript FILE" in capsys.readouterr().err


def test_the_merge_snippet_loads_every_tensor_of_the_trained_model(tmp_path, capsys):
    import subprocess
    import sys

    import timm
    import torch
    from safetensors.torch import load_file, save_file

    import repadapter as ra

    torch.manual_seed(0)
    base = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=4)  # not timm's 1000
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(tmp_path / "base.safetensors"))
    trained = ra.perturb_adapters(ra.inject(base))
    with torch.no_grad():  # a trained head, far from any fresh init
        trained.head.weight.add_(torch.randn_like(trained.head.weight))
    ra.save_adapter(trained, tmp_path / "a.safetensors")
    args = ["merge", "--model", "vit_tiny_patch16_224", "--img-size", "32"]
    args += ["--checkpoint", str(tmp_path / "base.safetensors"), "--adapter", str(tmp_path / "a.safetensors")]
    assert main([*args, "--out", str(tmp_path / "m.safetensors")]) == 0
    captured = capsys.readouterr()
    assert "does not record the backbone it was trained on" in captured.err  # a file from save_adapter
    out = captured.out.splitlines()
    start = out.index("  or load every tensor of it (the trained head too) in Python:") + 1
    snippet = [line[4:] for line in out[start:]]
    assert snippet[-1] == "model.eval()"
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    script = "\n".join(
        [
            *snippet,
            "import torch",
            "x = safetensors.torch.load_file('x.safetensors')['x']",
            "with torch.no_grad():",
            "    safetensors.torch.save_file({'y': model(x)}, 'y.safetensors')",
        ]
    )
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=300)
    with torch.no_grad():
        expected = trained.eval()(x)
    assert torch.allclose(load_file(tmp_path / "y.safetensors")["y"], expected, atol=1e-4)


def test_a_random_init_backbone_is_rebuilt_or_refused(tmp_path, capsys):
    """--no-pretrained trains on a seeded random backbone; eval and merge rebuild that very one
    (the adapter file records the seed and a fingerprint), and a different one is refused."""
    import timm
    from safetensors.torch import save_file

    from tests.fixtures import TINY_CLI_FLAGS, make_vtab_task

    make_vtab_task(tmp_path, "eurosat", train=16, val=8, test=12, classes=3)
    data = ["--data", f"vtab:{tmp_path / 'eurosat'}"]
    recipe = [*TINY_CLI_FLAGS, "--epochs", "2", "--scale", "1", "--selection", "none", "--seed", "7"]
    run = tmp_path / "run"
    assert main(["train", *data, *recipe, "--out", str(run)]) == 0
    capsys.readouterr()
    trained = f"{100 * json.loads((run / 'summary.json').read_text())['test_score']:.2f}%"
    model = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--no-pretrained"]
    adapter = ["--adapter", str(run / "adapter.safetensors")]
    assert main(["eval", *data, *model, *adapter, "--workers", "0"]) == 0
    assert f"accuracy {trained}" in capsys.readouterr().out
    deploy = tmp_path / "deploy.safetensors"
    assert main(["merge", *model, *adapter, "--out", str(deploy)]) == 0
    assert main(["eval", *data, *model, "--weights", str(deploy), "--workers", "0"]) == 0
    assert f"accuracy {trained}" in capsys.readouterr().out.splitlines()[-1]

    other = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=3)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "other.safetensors"))
    wrong = [*model[:4], "--checkpoint", str(tmp_path / "other.safetensors")]
    assert main(["merge", *wrong, *adapter, "--out", str(tmp_path / "wrong.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "was trained on another backbone than the one these flags build" in err
    assert "--model vit_tiny_patch16_224 --img-size 32 --no-pretrained (a random init, seed 7" in err
    assert not (tmp_path / "wrong.safetensors").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["merge", "--model", "m", "--adapter", "{d}/a", "--out", "{d}/./a"],
            "--out {d}/a is the --adapter input",
        ),
        (
            ["merge", "--model", "m", "--adapter", "{d}/a", "--checkpoint", "{d}/b", "--out", "{d}/b"],
            "--checkpoint",
        ),
        (
            ["export", "--model", "m", "--adapter", "{d}/a", "--torchscript", "{d}/a"],
            "--torchscript {d}/a is",
        ),
        (["export", "--model", "m", "--adapter", "{d}/a", "--onnx", "{d}/o", "--json", "{d}/o"], "same file"),
        (["train", "--data", "vtab:{d}", "--out", "{d}/run"], "overlap ({d}/run lies in {d})"),
        (["train", "--data", "csv:{d}/x", "--config", "{d}/c", "--out", "{d}/c"], "is the --config input"),
        (["vtab", "--root", "{d}", "--out", "{d}/runs"], "--root input"),
        (["bench", "accuracy", "--root", "{d}/suite", "--out", "{d}"], "overlap ({d}/suite lies in {d})"),
        (["bench", "methods", "--data", "folder:{d}", "--out", "o", "--runs", "{d}/r"], "--runs {d}/r and"),
        (["bench", "probe", "--checkpoint", "x={d}/a", "--out", "{d}/a"], "is the --checkpoint input"),
        (
            ["demo", "--data-root", "{d}", "--json", "{d}/suite.json"],
            "--json {d}/suite.json and the --data-root",
        ),
        (["support-table", "--json", "{d}/t", "--markdown", "{d}/t"], "--json and --markdown are the same"),
    ],
)
def test_every_writing_command_refuses_an_output_that_is_an_input(tmp_path, capsys, argv, message):
    """The refusal comes before any work: nothing here needs a real model, file or data set."""
    (tmp_path / "a").write_text("an input")
    assert main([arg.format(d=tmp_path) for arg in argv]) == 2
    assert message.format(d=tmp_path) in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["a"] and (tmp_path / "a").read_text() == "an input"


@pytest.mark.parametrize(
    "argv",
    [
        ["switch-time", "--rounds", "0"],
        ["bench", "latency", "--out", "x", "--batches", "1", "-8"],
        ["bench", "training", "--out", "x", "--steps", "0"],
        ["eval", "--model", "m", "--data", "vtab:x", "--adapter", "a", "--batch-size", "0"],
        ["eval", "--model", "m", "--data", "vtab:x", "--adapter", "a", "--workers", "-1"],
        ["merge", "--model", "m", "--adapter", "a", "--out", "b", "--img-size", "0"],
        ["data", "build", "offline", "--train", "-3"],
    ],
)
def test_counts_below_their_minimum_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and "expected a whole number of at least" in capsys.readouterr().err


def test_eval_scores_a_runs_trained_tensors(tmp_path, capsys):
    """`eval --weights run/trained.safetensors` scores a method without adapters as its run did,
    and refuses a --model it was not trained as; `predict` reads the file too."""
    from tests.fixtures import TINY_CLI_FLAGS, make_vtab_task

    make_vtab_task(tmp_path, "eurosat", train=16, val=8, test=12, classes=3)
    data = ["--data", f"vtab:{tmp_path / 'eurosat'}"]
    recipe = [*TINY_CLI_FLAGS, "--epochs", "2", "--selection", "none", "--method", "bitfit", "--seed", "7"]
    run = tmp_path / "run"
    assert main(["train", *data, *recipe, "--out", str(run)]) == 0
    capsys.readouterr()
    trained = f"{100 * json.loads((run / 'summary.json').read_text())['test_score']:.2f}%"
    weights = ["--weights", str(run / "trained.safetensors"), "--workers", "0"]
    assert main(["eval", *data, "--model", "vit_tiny_patch16_224", "--no-pretrained", *weights]) == 0
    assert f"accuracy {trained}" in capsys.readouterr().out
    assert main(["eval", *data, "--model", "vit_small_patch16_224", *weights]) == 2
    assert "holds a bitfit run of --model vit_tiny_patch16_224" in capsys.readouterr().err
    images, rows = tmp_path / "eurosat" / "images", tmp_path / "rows.csv"
    predict = ["predict", "--model", "vit_tiny_patch16_224", *weights[:2], "--images", str(images)]
    assert main([*predict, "--out", str(rows)]) == 0
    assert "top-5 of 10 classes for 36 images" in capsys.readouterr().out and rows.is_file()
