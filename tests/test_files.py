"""Adapter files: round trips, size, what they record, and every way a bad file is refused."""

import json
import os

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import repadapter as ra
from repadapter.files import atomic_write, read_adapter_file
from repadapter.tuner.inspection import has_adapters
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


@pytest.mark.parametrize("interrupt", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_an_interrupted_write_leaves_no_temporary_and_the_old_file(saved, interrupt):
    _, path = saved
    before = path.read_bytes()
    seen = []

    def crash(tmp):
        seen.append(tmp.name)
        tmp.write_bytes(b"half a file")
        raise interrupt

    with pytest.raises(type(interrupt)):
        atomic_write(path, crash)
    # while it was written, the temporary was hidden and could not pass for a finished file
    assert seen[0].startswith(f".{path.name}.") and seen[0].endswith(".partial")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_an_interrupted_folder_build_leaves_nothing(tmp_path):
    from repadapter.files import partial_folder

    target = tmp_path / "task"
    with pytest.raises(KeyboardInterrupt), partial_folder(target) as tmp:
        assert tmp.name == ".task.partial"
        (tmp / "images").mkdir(parents=True)
        (tmp / "images" / "0.png").write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def _rewritten(path, tmp_path, change):
    """A copy of the adapter file at ``path`` with ``change(tensors)`` applied, header kept."""
    from repadapter.files import save_tensor_file

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = f.metadata()
    change(tensors)
    return save_tensor_file(tmp_path / "changed.safetensors", tensors, header)


@pytest.mark.parametrize(
    "name, value", [("blocks.3.attn.repadapter.up.weight", float("nan")), ("head.bias", float("inf"))]
)
def test_non_finite_tensors_are_refused_naming_the_tensor(saved, tmp_path, name, value):
    from repadapter.files import read_tensor_file

    _, path = saved
    bad = _rewritten(path, tmp_path, lambda tensors: tensors[name].view(-1)[0].fill_(value))
    for read in (read_adapter_file, read_tensor_file):
        with pytest.raises(ra.RepAdapterError, match=f"tensor {name} holds 1 NaN or infinite value"):
            read(bad)


def test_files_of_another_family_name_the_family_they_are_for(saved, tmp_path):
    from tests.training.tasks.test_segmentation import segmenter

    _, vit_file = saved
    convnext = timm.create_model("convnext_atto", num_classes=10)
    with pytest.raises(
        ra.RepAdapterError, match="is for model family 'timm_vit'.*but this model is 'timm_convnext'"
    ):
        ra.load_adapter(convnext, vit_file)
    assert not has_adapters(convnext)
    seg_file = ra.save_adapter(ra.inject(segmenter("vit")), tmp_path / "seg.safetensors")
    assert read_adapter_file(seg_file).metadata["backbone_family"] == "timm_vit"
    with pytest.raises(
        ra.RepAdapterError, match="'segmenter' with a 'timm_vit' backbone.*'timm_swin' backbone"
    ):
        ra.load_adapter(segmenter("swin"), seg_file)
    with pytest.raises(ra.RepAdapterError, match="is for model family 'segmenter'.*this model is 'timm_vit'"):
        ra.load_adapter(build_vit("vit_tiny"), seg_file)


SAVE_IN_A_NEW_PROCESS = """
import sys
import repadapter as ra
from tests.conftest import build_vit
ra.save_adapter(ra.perturb_adapters(ra.inject(build_vit("vit_tiny")), seed=3), sys.argv[1])
"""


def test_the_same_adapter_saved_twice_gives_the_same_bytes(tmp_path):
    import subprocess
    import sys

    paths = [tmp_path / "one.safetensors", tmp_path / "two.safetensors"]
    for path in paths:  # new processes: safetensors' metadata order used to vary between them
        run = subprocess.run(
            [sys.executable, "-c", SAVE_IN_A_NEW_PROCESS, str(path)], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
    assert paths[0].read_bytes() == paths[1].read_bytes()
    data = paths[0].read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert list(header["__metadata__"]) == ["format", "repadapter"]  # sorted
