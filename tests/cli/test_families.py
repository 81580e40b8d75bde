"""Every model family from the command line: a tiny local model of each `--model` form through
train, merge, eval, export and predict, in subprocesses, as a user runs them."""

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from repadapter.families.factory import create_base
from repadapter.files import read_adapter_file
from repadapter.training.tasks import logits_of
from repadapter.tuner.adapter_files import load_adapter
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
    # the merged file holds every tensor: no --checkpoint to rebuild it
    weights_model = [m for m in model if m not in model[2:]]
    score = json.loads((run / "summary.json").read_text())["test_score"]
    after = _ok(run_cli("eval", *data, *weights_model, "--weights", merged, *COMMON)).stdout
    assert f"{100 * score:.2f}%" in after.splitlines()[0]  # the merged model scores as the adapted one
    checkpoint = model[3] if len(model) > 2 else None
    adapted = load_adapter(create_base(model[1], 2, checkpoint=checkpoint), adapter).eval()
    plain = create_base(model[1], 2, pretrained=False).eval()
    plain.load_state_dict(load_file(merged), strict=True)  # the architecture the name builds, vanilla
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (logits_of(plain(x)) - logits_of(adapted(x))).abs().max() <= 1e-4

    onnx = tmp_path / "model.onnx"
    out = _ok(run_cli("export", *model, "--adapter", adapter, "--onnx", onnx)).stdout
    assert onnx.is_file() and "max |delta logits|" in out

    predictions = tmp_path / "predictions.csv"
    images = tmp_path / "data" / "test"
    _ok(run_cli("predict", *model, "--adapter", adapter, "--images", images, "--out", predictions))
    rows = _rows(predictions)
    assert len(rows) == 8 and all(0 < float(r["prob_1"]) <= 1 for r in rows)
