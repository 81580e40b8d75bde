"""Activation checkpointing (--grad-checkpointing) on every family of the support table: the same
gradients as without it, fewer saved activations, and the merge unchanged."""

import copy

import pytest
import timm
import torch

import repadapter as ra
from repadapter import RepAdapterError
from repadapter.training.activations import set_grad_checkpointing
from repadapter.training.trainer import train_mode
from repadapter_lab.benchmarks.support import CASES, Case
from repadapter_lab.benchmarks.training import saved_activation_bytes

pytest.importorskip("open_clip")
pytest.importorskip("transformers")


def _segmenter(size):
    from repadapter.training.tasks.segmentation import Segmenter

    torch.manual_seed(0)
    backbone = timm.create_model("vit_tiny6_patch4_32", num_classes=0, depth=2, img_size=size)
    return Segmenter(backbone, 3, levels=2, channels=16)


def _videomae(size):
    import transformers

    config = transformers.VideoMAEConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=size[0], patch_size=4, num_frames=4, tubelet_size=2, num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.VideoMAEForVideoClassification(config)


def _clip_forward(model, x):
    return model(pixel_values=x.unsqueeze(1).expand(-1, 4, -1, -1, -1)).logits


# one model of each family of the support table (its first), the Segmenter and VideoMAE
SWITCHABLE = [
    *list({case.family: case for case in reversed(CASES) if not case.target_modules}.values())[::-1],
    Case("Segmenter", "Segmenter(vit_tiny6_patch4_32)", _segmenter, ("block",), ((32, 32),)),
    Case(
        "HF VideoMAE",
        "VideoMAEForVideoClassification",
        _videomae,
        ("block",),
        ((16, 16),),
        forward=_clip_forward,
    ),
]


def _adapted(case):
    size = case.sizes[0]
    model = case.build(size)
    placement = "block" if "block" in case.placements else case.placements[0]
    config = ra.RepAdapterConfig(dim=4, groups=1, placement=placement, dropout=0.3)
    ra.perturb_adapters(ra.inject(model, config), seed=3)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(4))
    return train_mode(model), x


def _step(case, model, x):
    """Gradients of every trained parameter and the bytes autograd saved, with fixed randomness
    (adapter dropout, drop-path) so two runs draw the same masks."""

    def loss():
        torch.manual_seed(0)
        return case.forward(model, x).float().pow(2).mean()

    saved = saved_activation_bytes(model, lambda: loss().backward())
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return grads, saved


@pytest.mark.parametrize("case", SWITCHABLE, ids=[c.id for c in SWITCHABLE])
def test_checkpointing_keeps_gradients_and_saves_less(case):
    plain, x = _adapted(case)
    checkpointed = set_grad_checkpointing(copy.deepcopy(plain))
    grads, saved = _step(case, plain, x)
    grads_ckpt, saved_ckpt = _step(case, checkpointed, x)
    assert grads.keys() == grads_ckpt.keys()
    assert any(".adapter" in n or "repadapter" in n for n in grads), "no adapter was trained"
    for name, grad in grads.items():
        assert grad.abs().max() > 0 or "head" in name, f"{name} got no gradient"
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert saved_ckpt < saved


@pytest.mark.parametrize("case", SWITCHABLE[:1], ids=[c.id for c in SWITCHABLE[:1]])
def test_checkpointed_model_merges_to_the_same_vanilla_model(case):
    model, _ = _adapted(case)
    expected = ra.merge(model.eval()).state_dict()
    merged = ra.merge(set_grad_checkpointing(model).eval()).state_dict()
    assert expected.keys() == merged.keys()
    assert all(torch.equal(expected[k], merged[k]) for k in expected)


def test_a_model_without_a_switch_is_refused_with_the_fix():
    with pytest.raises(RepAdapterError, match="without --grad-checkpointing"):
        set_grad_checkpointing(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def _input_norms(model):
    from repadapter.tuner.hosts import adapted_hosts, site_of

    return [site_of(host).input_norm for _, host in adapted_hosts(model) if site_of(host).input_norm]


def _without_recomputation(model):
    """The same model with every adapter keeping its own input, as before adapters recomputed
    it from what their input norm keeps."""
    from repadapter.tuner.hosts import _watch_norm

    for norm in _input_norms(model):
        _watch_norm(norm, watch=False)
    return model


@pytest.mark.parametrize("case", SWITCHABLE, ids=[c.id for c in SWITCHABLE])
def test_recomputing_adapter_inputs_from_the_norm_keeps_gradients(case):
    recomputing, x = _adapted(case)
    keeping = _without_recomputation(copy.deepcopy(recomputing))
    grads, saved = _step(case, recomputing, x)
    grads_kept, saved_kept = _step(case, keeping, x)
    assert grads.keys() == grads_kept.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_kept[name], rtol=1e-5, atol=1e-6, msg=name)
    # less where some adapter reads a norm's output (not on CNNs, nor on ConvNeXt's channels-first maps)
    assert saved < saved_kept if _input_norms(recomputing) else saved == saved_kept


def test_repadapter_saves_activations_within_5_percent_of_the_floor():
    from repadapter.training.config import TrainConfig
    from repadapter.training.methods import method
    from repadapter_lab.benchmarks.training import VARIANTS

    def saved(prepare):
        torch.manual_seed(0)
        model = prepare(timm.create_model("vit_tiny6_patch4_32", num_classes=10)).train()
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        return saved_activation_bytes(model, lambda: model(x).pow(2).mean())

    floor = saved(VARIANTS["floor"])
    adapted = saved(lambda model: method("repadapter").prepare(model, TrainConfig(), 1.0))
    assert floor < adapted <= 1.05 * floor
