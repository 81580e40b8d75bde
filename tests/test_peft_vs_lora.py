"""The steps a PEFT user takes, run with PEFT's own LoRA and with RepAdapter on a timm ViT and a
Hugging Face ViT (tiny, random weights). Each test asserts the same outcome for both methods, or
RepAdapter's documented refusal where it differs from LoRA."""

import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

import repadapter as ra  # noqa: E402
import repadapter.peft_plugin as rp  # noqa: E402
from repadapter import RepAdapterError  # noqa: E402
from tests.fixtures import tiny_hf_vit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("timm", "hf")
METHODS = ("lora", "repadapter")
CASES = [(method, model) for model in MODELS for method in METHODS]


def build(model: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The same tiny base model every time (seeded), in eval mode."""
    torch.manual_seed(0)
    if model == "timm":
        base = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=5)
    else:
        base = tiny_hf_vit(num_labels=5)
    return base.to(dtype).eval()


def config(method: str, model: str, identity: bool = False, **extra):
    """LoRA on the layers RepAdapter adapts; RepAdapter with its default targets."""
    if method == "lora":
        targets = ["qkv", "fc1"] if model == "timm" else ["q_proj", "k_proj", "v_proj", "fc1"]
        return peft.LoraConfig(target_modules=targets, r=4, init_lora_weights=identity, **extra)
    return rp.RepAdapterPeftConfig(init_weights=identity, **extra)


def logits(model, x, **kwargs):
    out = model(x, **kwargs) if not hasattr(model, "config") else model(pixel_values=x, **kwargs)
    return out if isinstance(out, torch.Tensor) else out.logits


def inputs(n: int = 4, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(dtype)


def adapted(method: str, model: str, name: str = "default", **extra):
    return peft.get_peft_model(build(model), config(method, model, **extra), adapter_name=name).eval()


@pytest.mark.parametrize(("method", "model"), CASES)
def test_mixed_adapter_batches_send_each_row_through_its_adapter(method, model):
    peft_model = adapted(method, model, name="a")
    peft_model.add_adapter("b", config(method, model))
    peft_model.eval()
    x = inputs(6)
    with torch.no_grad():
        base = logits(build(model), x)
        outputs = {}
        for name in ("a", "b"):
            peft_model.set_adapter(name)
            outputs[name] = logits(peft_model, x)
        outputs["__base__"] = base
        names = ["__base__", "a", "b", "a", "b", "__base__"]
        mixed = logits(peft_model, x, adapter_names=names)
    assert (outputs["a"] - base).abs().max() > 1e-3 and (outputs["b"] - outputs["a"]).abs().max() > 1e-3
    for row, name in enumerate(names):
        assert (mixed[row] - outputs[name][row]).abs().max() <= 1e-5, (row, name)


@pytest.mark.parametrize(("method", "model"), CASES)
def test_mixed_batches_are_refused_alike(method, model):
    peft_model = adapted(method, model)
    x = inputs(2)
    with pytest.raises(ValueError, match="non-existing adapter"), torch.no_grad():
        logits(peft_model, x, adapter_names=["default", "nope"])
    peft_model.train()
    with pytest.raises(ValueError, match="training mode"):
        logits(peft_model, x, adapter_names=["default", "default"])
    peft_model.eval()
    peft_model.merge_adapter()
    with pytest.raises(ValueError, match="merged adapters"), torch.no_grad():
        logits(peft_model, x, adapter_names=["default", "__base__"])


@pytest.mark.parametrize(("method", "model"), CASES)
def test_an_adapter_loads_under_any_name(method, model, tmp_path):
    peft_model = adapted(method, model)
    x = inputs()
    with torch.no_grad():
        expected = logits(peft_model, x)
    peft_model.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(build(model), tmp_path, adapter_name="cifar").eval()
    loaded.load_adapter(tmp_path, adapter_name="task2")
    with torch.no_grad():
        assert (logits(loaded, x) - expected).abs().max() <= 1e-6
        loaded.set_adapter("task2")
        assert (logits(loaded, x) - expected).abs().max() <= 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(("method", "model"), CASES)
def test_half_precision_bases_train_run_and_merge(method, model, dtype):
    x = inputs(2)
    reference = adapted(method, model)
    with torch.no_grad():
        expected = logits(reference, x)
    half = peft.get_peft_model(build(model, dtype), config(method, model)).eval()
    half.load_state_dict(reference.state_dict())  # the same adapter weights
    adapter_dtypes = {p.dtype for n, p in half.named_parameters() if p.requires_grad}
    assert adapter_dtypes == {torch.float32}  # PEFT's default autocast_adapter_dtype=True
    with torch.no_grad():
        out = logits(half, x.to(dtype))
        assert out.dtype == dtype
        assert (out.float() - expected).abs().max() <= 0.05 * expected.abs().max()
        merged = logits(half.merge_and_unload(), x.to(dtype)).float()
    assert (merged - out.float()).abs().max() <= 0.05 * expected.abs().max()
    trainable = peft.get_peft_model(build(model, dtype), config(method, model)).train()
    logits(trainable, x.to(dtype)).float().sum().backward()
    grads = [p.grad for p in trainable.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


FRESH_PROCESS = """
import sys, torch, peft
import repadapter.peft_plugin
from tests.test_peft_vs_lora import build, inputs, logits
model = peft.PeftModel.from_pretrained(build(sys.argv[1]), sys.argv[2]).eval()
with torch.no_grad():
    torch.save(logits(model, inputs()), sys.argv[3])
"""


@pytest.mark.parametrize(("method", "model"), CASES)
def test_save_and_load_in_a_fresh_process(method, model, tmp_path):
    peft_model = adapted(method, model)
    with torch.no_grad():
        expected = logits(peft_model, inputs())
    peft_model.save_pretrained(tmp_path / "adapter")
    run = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, model, str(tmp_path / "adapter"), str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (torch.load(tmp_path / "out.pt") - expected).abs().max() <= 1e-6


@pytest.mark.parametrize(("method", "model"), CASES)
def test_merge_and_unload_gives_the_plain_model(method, model):
    peft_model = adapted(method, model)
    x = inputs()
    with torch.no_grad():
        expected = logits(peft_model, x)
    vanilla = build(model)
    vanilla.load_state_dict(peft_model.merge_and_unload().state_dict(), strict=True)
    with torch.no_grad():
        assert (logits(vanilla, x) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize(("method", "model"), CASES)
def test_disable_adapter_gives_the_base_model(method, model):
    peft_model = adapted(method, model)
    x = inputs()
    with torch.no_grad():
        base = logits(build(model), x)
        adapted_out = logits(peft_model, x)
        with peft_model.disable_adapter():
            assert (logits(peft_model, x) - base).abs().max() <= 1e-6
        assert torch.equal(logits(peft_model, x), adapted_out)
    assert (adapted_out - base).abs().max() > 1e-3


class _Images(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.x = inputs(8)
        self.y = torch.arange(8) % 5

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


class _ImageTrainer(transformers.Trainer):
    """Cross-entropy on ``logits(model, pixel_values)``: a timm model returns no loss itself."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = logits(model, inputs["pixel_values"])
        loss = torch.nn.functional.cross_entropy(out, inputs["labels"])
        return (loss, out) if return_outputs else loss


def _train(method, model, folder, resume=None):
    peft_model = peft.get_peft_model(build(model), config(method, model, identity=True)).train()
    args = transformers.TrainingArguments(
        output_dir=str(folder),
        max_steps=4,
        save_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        remove_unused_columns=False,  # timm models take the images positionally
    )
    _ImageTrainer(model=peft_model, args=args, train_dataset=_Images()).train(resume_from_checkpoint=resume)
    return {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(("method", "model"), CASES)
def test_trainer_resumes_from_a_checkpoint_to_the_same_weights(method, model, tmp_path):
    straight = _train(method, model, tmp_path / "a")
    resumed = _train(method, model, tmp_path / "b", resume=str(tmp_path / "a" / "checkpoint-2"))
    initial = {n: p for n, p in adapted(method, model, identity=True).named_parameters() if p.requires_grad}
    assert straight.keys() == resumed.keys() == initial.keys()
    assert any((straight[n] - initial[n]).abs().max() > 1e-4 for n in straight)  # it trained
    assert max((straight[n] - resumed[n]).abs().max().item() for n in straight) <= 1e-6


@pytest.mark.parametrize("model", MODELS)
def test_load_adapter_leaves_the_same_adapters_trainable_as_lora(model, tmp_path):
    trainable = {}
    for method in METHODS:
        adapted(method, model).save_pretrained(tmp_path / method)
        for is_trainable in (True, False):
            peft_model = adapted(method, model, identity=True)
            peft_model.load_adapter(tmp_path / method, adapter_name="other", is_trainable=is_trainable)
            names = {n for n, p in peft_model.named_parameters() if p.requires_grad}
            trainable[method, is_trainable] = {
                a for a in ("default", "other") if any(f".{a}." in n for n in names)
            }
    assert trainable["repadapter", True] == trainable["lora", True]
    assert trainable["repadapter", False] == trainable["lora", False] == {"default"}


# --- where the methods differ -------------------------------------------------------------


def test_default_targets_lora_refuses_repadapter_uses_the_core_sites():
    with pytest.raises(ValueError, match="specify `target_modules`"):
        peft.get_peft_model(build("hf"), peft.LoraConfig())
    hf_model = peft.get_peft_model(build("hf"), rp.RepAdapterPeftConfig())
    assert hf_model.peft_config["default"].target_modules == [
        f"vit.layers.{i}.{site}" for i in range(2) for site in ("attention", "mlp.fc1")
    ]
    timm_model = peft.get_peft_model(build("timm"), rp.RepAdapterPeftConfig())
    assert timm_model.peft_config["default"].target_modules == [
        f"blocks.{i}.{site}" for i in range(2) for site in ("attn.qkv", "mlp.fc1")
    ]
    with pytest.raises(RepAdapterError, match="no default target_modules for a Sequential"):
        peft.get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), rp.RepAdapterPeftConfig())


def test_hugging_face_path_trains_the_core_model():
    """One adapter on the input q, k, v share, as ra.inject puts it: same parameters, same outputs."""
    peft_model = adapted("repadapter", "hf", dropout=0.0)
    core = ra.inject(build("hf"), ra.RepAdapterConfig(dropout=0.0, placement="block"))
    peft_adapters = {n: p for n, p in peft_model.named_parameters() if "repadapter_" in n}
    assert sum(p.numel() for p in peft_adapters.values()) == ra.count_parameters(core).adapter
    with torch.no_grad():  # copy the PEFT adapters into the core model's sites
        for host, module in core.named_modules():
            if not hasattr(module, "repadapter"):
                continue
            layer = peft_model.get_submodule(f"base_model.model.{host}")
            if not isinstance(layer, rp.RepAdapterLayer):
                layer = layer.get_submodule("fc1")
            for part in ("down", "up"):
                source = getattr(layer, f"repadapter_{part}")["default"]
                getattr(module.repadapter, part).load_state_dict(source.state_dict())
    x = inputs()
    with torch.no_grad():
        assert (logits(core.eval(), x) - logits(peft_model, x)).abs().max() <= 1e-5


def test_one_of_several_layers_sharing_an_input_is_refused_where_lora_adapts_it():
    peft.get_peft_model(build("hf"), peft.LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(
        RepAdapterError, match="shares its input with q_proj, k_proj, v_proj.*target 'attention'"
    ):
        peft.get_peft_model(build("hf"), rp.RepAdapterPeftConfig(target_modules=["q_proj"]))
