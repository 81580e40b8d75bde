"""Adapter files: round trips, size, what they record, and every way a bad file is refused."""

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import repadapter as ra
from repadapter.files import atomic_write, read_adapter_file
from tests.conftest import build_vit, input_for


@pytest.fixture
def saved(tmp_path):
    model = ra.perturb_adapters(ra.inject(build_vit("vit_tiny")), seed=3).eval()
    return model, ra.save_adapter(model, tmp_path / "task.safetensors")


def test_load_adapter_reproduces_the_trained_model(saved):
    model, path = saved
    fresh = ra.load_adapter(build_vit("vit_tiny"), path)
    x = input_for(model)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert ra.adapter_config(fresh) == ra.adapter_config(model)
    # Loading again into the same injected model is allowed; it only refreshes the tensors.
    assert ra.load_adapter(fresh, path) is fresh
    # A file already read loads the same, without reading it again.
    from_read = ra.load_adapter(build_vit("vit_tiny"), read_adapter_file(path))
    with torch.no_grad():
        assert torch.equal(from_read(x), model(x))


def test_file_holds_adapters_and_head_only_with_its_description(saved):
    model, path = saved
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        meta = json.loads(f.metadata()["repadapter"])
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in names if ".repadapter." not in n} == {"head.weight", "head.bias"}
    assert meta["method"] == "repadapter" and meta["format_version"] == 1
    assert meta["library_version"] == ra.__version__
    assert meta["config"] == ra.RepAdapterConfig().to_dict()
    assert meta["family"] == "timm_vit" and meta["base_model"] == "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert meta["num_classes"] == 10
    assert meta["sites"]["blocks.0.attn"] == {"consumers": ["qkv"], "in_features": 192, "bias": "consumer"}
    assert len(meta["sites"]) == 24


def test_vit_base_block_adapter_without_head_is_under_one_megabyte(tmp_path):
    model = ra.inject(build_vit("vit_base_224", num_classes=0), ra.RepAdapterConfig(placement="block"))
    path = ra.save_adapter(model, tmp_path / "vitb.safetensors")
    assert ra.count_parameters(model).adapter == 24 * 9992
    assert path.stat().st_size < 1_000_000


def test_bias_free_consumers_record_their_norm_sink(tmp_path):
    model = ra.inject(build_vit("vit_small_no_qkv_bias"))
    path = ra.save_adapter(model, tmp_path / "a.safetensors")
    meta = ra.files.read_adapter_file(path).metadata
    assert meta["sites"]["blocks.0.attn"]["bias"] == "norm"
    assert meta["sites"]["blocks.0.mlp"]["bias"] == "consumer"


@pytest.mark.parametrize(
    "key, extra, message",
    [
        (
            "vit_small_no_qkv_bias",
            {"qkv_bias": True},
            "made for .*in_features': 192.*Load it into a model of the same width",
        ),
        ("vit_tiny", {"depth": 6}, "24 sites, this model has 12.*same depth"),
        ("vit_tiny", {"num_classes": 5}, "head.(weight|bias) has shape \\(10.*num_classes=10"),
        (
            "deit_tiny_distilled",
            {"depth": 12},
            "has no head_dist.bias, head_dist.weight, which this model trains",
        ),
    ],
)
def test_files_for_another_model_are_refused_before_touching_it(saved, key, extra, message):
    _, path = saved
    model = build_vit(key, **extra)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ra.RepAdapterError, match=message):
        ra.load_adapter(model, path)
    assert not any(".repadapter." in n for n in dict(model.named_parameters()))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_broken_files_are_refused_with_the_file_named(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file at all")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    cases = [
        (truncated, "truncated.safetensors is not a readable adapter file"),
        (garbage, "garbage.safetensors is not a readable adapter file"),
        (plain, "plain.safetensors is a safetensors file but not a repadapter adapter file"),
        (tmp_path / "missing.safetensors", "missing.safetensors does not exist"),
    ]
    for bad, message in cases:
        with pytest.raises(ra.RepAdapterError, match=message):
            ra.load_adapter(build_vit("vit_tiny"), bad)


def test_newer_format_versions_are_refused(saved, tmp_path):
    _, path = saved
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["repadapter"])
    meta["format_version"] = 99
    future = tmp_path / "future.safetensors"
    save_file(tensors, str(future), metadata={"repadapter": json.dumps(meta)})
    with pytest.raises(ra.RepAdapterError, match="format version 99.*upgrade repadapter"):
        ra.load_adapter(build_vit("vit_tiny"), future)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(saved):
    _, path = saved
    before = path.read_bytes()

    def crash(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, crash)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_writing_into_a_missing_folder_names_it(saved, tmp_path):
    model, _ = saved
    with pytest.raises(ra.RepAdapterError, match="folder .*nope does not exist"):
        ra.save_adapter(model, tmp_path / "nope" / "a.safetensors")


def test_written_files_get_ordinary_permissions(saved):
    _, path = saved
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o640)
    atomic_write(path, lambda tmp: tmp.write_bytes(b"x"))
    assert path.stat().st_mode & 0o777 == 0o640
