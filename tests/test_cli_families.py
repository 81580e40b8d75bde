"""Every model family from the command line: a tiny local model of each `--model` form through
train, merge, eval, export and predict, in subprocesses, as a user runs them."""

import csv
import json

import pytest
import torch

from repadapter.files import read_adapter_file
from tests.fixtures import make_image_folder, run_cli

COMMON = ["--device", "cpu", "--workers", "0"]
ONE_EPOCH = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4", "--quiet"]


def _timm_local_dir(tmp_path):
    import timm
    from timm.models import save_for_hf

    args = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=3, **args)
    save_for_hf(model, str(tmp_path / "timm"), model_args=args, safe_serialization=True)
    return [f"local-dir:{tmp_path / 'timm'}"]


def _hf(kind):
    def build(tmp_path):
        import transformers

        torch.manual_seed(0)
        shape = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2}
        shape["num_attention_heads"] = 2
        if kind == "vit":
            config = transformers.ViTConfig(**shape, intermediate_size=64)
            model = transformers.ViTForImageClassification(config)
        elif kind == "dinov2":
            model = transformers.Dinov2Model(transformers.Dinov2Config(**shape, mlp_ratio=2))
        else:
            model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**shape, intermediate_size=64))
        model.save_pretrained(tmp_path / kind)
        return [f"hf:{tmp_path / kind}"]

    return build


def _open_clip(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }
    path = tmp_path / "tiny-clip.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tiny-clip").state_dict(), tmp_path / "tiny-clip.pt")
    return [f"open_clip:{path}", "--checkpoint", str(tmp_path / "tiny-clip.pt")]


FAMILIES = {
    "timm-local-dir": _timm_local_dir,
    "hf-vit": _hf("vit"),
    "hf-dinov2": _hf("dinov2"),
    "hf-clip-vision": _hf("clip"),
    "open_clip": _open_clip,
}


def _ok(run):
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_trains_merges_evaluates_exports_and_predicts(family, tmp_path):
    model = ["--model", *FAMILIES[family](tmp_path)]
    data = ["--data", f"folder:{make_image_folder(tmp_path / 'data')}"]
    run, adapter = tmp_path / "run", tmp_path / "run" / "adapter.safetensors"
    _ok(run_cli("train", *data, *model, *COMMON, *ONE_EPOCH, "--out", run))
    record = read_adapter_file(adapter).metadata["backbone"]
    assert record["model"] == model[1] and record["sha256"]

    merged = tmp_path / "merged.safetensors"
    _ok(run_cli("merge", *model, "--adapter", adapter, "--out", merged))
    weights_model = [m for m in model if m not in model[2:]]  # the merged file holds every tensor
    before = _ok(run_cli("eval", *data, *model, "--adapter", adapter, *COMMON)).stdout.splitlines()[0]
    after = _ok(run_cli("eval", *data, *weights_model, "--weights", merged, *COMMON)).stdout.splitlines()[0]
    assert before == after and "%" in before  # the merged model scores as the adapted one

    onnx = tmp_path / "model.onnx"
    out = _ok(run_cli("export", *model, "--adapter", adapter, "--onnx", onnx)).stdout
    assert onnx.is_file() and "max |delta logits|" in out

    images = tmp_path / "data" / "test"
    by_adapter, by_weights = tmp_path / "a.csv", tmp_path / "w.csv"
    _ok(run_cli("predict", *model, "--adapter", adapter, "--images", images, "--out", by_adapter))
    _ok(run_cli("predict", *weights_model, "--weights", merged, "--images", images, "--out", by_weights))
    a, w = _rows(by_adapter), _rows(by_weights)
    assert len(a) == 8 and [r["class_1"] for r in a] == [r["class_1"] for r in w]
    for x, y in zip(a, w, strict=True):
        assert float(x["prob_1"]) == pytest.approx(float(y["prob_1"]), abs=1e-5)
