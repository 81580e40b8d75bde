"""Segmentation: the Segmenter with RepAdapter in its backbone, its family, metrics and inference."""

import numpy as np
import pytest
import timm
import torch
from torch import nn

import repadapter as ra
import repadapter.families.factory  # registers vit_tiny6_patch4_32
from repadapter import RepAdapterError
from repadapter.families import family_of
from repadapter.files import read_adapter_file
from repadapter.training.config import TrainConfig
from repadapter.training.methods.base import classifier_names
from repadapter.training.tasks.base import IGNORE_INDEX, confusion
from repadapter.training.tasks.segmentation import (
    SEGMENTATION,
    Segmenter,
    create_segmenter,
    match_trained_head,
    predict_segmentation,
    segmentation_loss,
    segmentation_preprocessing,
    segmentation_scores,
    slide_logits,
)

NUM_CLASSES = 5


class Wrapper(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def vit_backbone(seed=0):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny6_patch4_32", num_classes=0, depth=3, dynamic_img_size=True)


def swin_backbone(seed=0):
    torch.manual_seed(seed)
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        num_classes=0,
        embed_dim=24,
        depths=(1, 1),
        num_heads=(1, 1),
        window_size=4,
        img_size=32,
        strict_img_size=False,
    )


BACKBONES = {"vit": vit_backbone, "swin": swin_backbone}


def segmenter(kind, levels=1, seed=0, head_seed=None):
    backbone = BACKBONES[kind](seed)
    with torch.no_grad():  # biases off zero, so bias folding is exercised
        for name, param in backbone.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.02)
    torch.manual_seed(seed + 100 if head_seed is None else head_seed)
    return Segmenter(backbone, NUM_CLASSES, levels=levels, channels=32).eval()


@pytest.mark.parametrize("kind", ["vit", "swin"])
@pytest.mark.parametrize("levels", [1, 2])
def test_dense_logits_at_two_input_sizes(kind, levels):
    model = segmenter(kind, levels)
    with torch.no_grad():
        for size in [(32, 32), (48, 64)]:
            out = model(torch.randn(2, 3, *size))
            assert out.shape == (2, NUM_CLASSES, *size)
            assert torch.isfinite(out).all()
    width = sum(e["num_chs"] for e in model.backbone.feature_info[-levels:])
    assert model.decode_head.proj.in_channels == width


def test_pretrained_cfg_names_the_head_and_keeps_the_backbone():
    model = segmenter("swin")
    assert model.pretrained_cfg["classifier"] == "decode_head"
    assert model.pretrained_cfg["num_classes"] == NUM_CLASSES
    assert model.pretrained_cfg["architecture"] == "swin_tiny_patch4_window7_224"
    assert classifier_names(model) == ("decode_head",)
    assert model.input_size == (32, 32)


def test_bad_backbones_and_levels_are_refused():
    with pytest.raises(RepAdapterError, match="forward_intermediates"):
        Segmenter(nn.Conv2d(3, 8, 1), NUM_CLASSES)
    with pytest.raises(RepAdapterError, match="levels=3 is out of range.*1..2"):
        Segmenter(swin_backbone(), NUM_CLASSES, levels=3)


def test_family_delegates_to_the_backbone_under_backbone_prefix():
    model = segmenter("vit")
    family = family_of(model)
    backbone_sites = family_of(model.backbone).sites(model.backbone, "block")
    sites = family.sites(model, "block")
    assert family.name == "segmenter" and family.head_prefixes(model) == ("decode_head",)
    assert [s.host for s in sites] == [f"backbone.{s.host}" for s in backbone_sites]
    assert sites[0].bias_sink == "backbone.blocks.0.norm1" and sites[0].consumers == ("qkv",)
    with pytest.raises(RepAdapterError, match="placement='io' does not exist for timm_vit"):
        ra.inject(model, ra.RepAdapterConfig(placement="io"))


def test_inject_trains_only_adapters_and_decode_head():
    model = ra.inject(segmenter("swin"), ra.RepAdapterConfig(dim=4, groups=2))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".repadapter." in n or n.startswith("decode_head.") for n in trained)
    assert {n for n in trained if n.startswith("decode_head.")} == {
        n for n, _ in model.decode_head.named_parameters(prefix="decode_head")
    }
    assert len({n.split(".repadapter.")[0] for n in trained if ".repadapter." in n}) == 4


@pytest.mark.parametrize("kind", ["vit", "swin"])
def test_merge_is_exact_vanilla_and_round_trips(kind, tmp_path):
    model = ra.perturb_adapters(
        ra.inject(segmenter(kind, levels=2), ra.RepAdapterConfig(dim=4, groups=2)), seed=3
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    file = ra.save_adapter(model, tmp_path / "seg.safetensors")
    meta = read_adapter_file(file).metadata
    assert meta["family"] == "segmenter" and meta["num_classes"] == NUM_CLASSES
    assert (
        meta["base_model"]
        == model.backbone.pretrained_cfg["architecture"] + "." + model.backbone.pretrained_cfg["tag"]
    )
    merged = ra.merge(model)
    assert not ra.has_adapters(merged)
    vanilla = segmenter(kind, levels=2, seed=7)
    vanilla.load_state_dict(merged.state_dict(), strict=True)
    with torch.no_grad():
        assert (vanilla(x) - reference).abs().max() <= 1e-5
        # the same base with another head: load_adapter brings the trained head along
        fresh = segmenter(kind, levels=2, seed=0, head_seed=55)
        assert not torch.equal(fresh.decode_head.proj.weight, model.decode_head.proj.weight)
        loaded = ra.load_adapter(fresh, file)
        assert ra.has_adapters(loaded) and (loaded(x) - reference).abs().max() <= 1e-5
        restored = ra.unmerge(merged, file)
        assert (restored(x) - reference).abs().max() <= 1e-5
    state = restored.state_dict()
    worst = max(((state[k] - v).norm() / v.norm()).item() for k, v in before.items() if v.norm() > 0)
    assert worst <= 1e-6


def test_create_segmenter_from_a_config():
    cfg = TrainConfig(model="vit_tiny6_patch4_32", pretrained=False, img_size=32, drop_path=0.0, seg_levels=2)
    model = create_segmenter(cfg, 11)
    assert isinstance(model, Segmenter) and model.num_classes == 11 and model.levels == 2
    assert SEGMENTATION.build_model(cfg, 3).num_classes == 3
    prep = segmentation_preprocessing(model, "model")
    assert prep["input_size"] == [32, 32] and prep["mean"] == [0.5, 0.5, 0.5]
    assert SEGMENTATION.predict is predict_segmentation and SEGMENTATION.metric == "mIoU"


# --- metrics ----------------------------------------------------------------------------------


def test_scores_of_a_hand_computed_matrix():
    # rows: target, columns: prediction. Class 2 is predicted once but never a target;
    # class 3 is neither: no IoU, left out of the mean.
    matrix = torch.tensor([[3, 1, 0, 0], [1, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    scores = segmentation_scores(matrix)
    iou = [3 / (4 + 4 - 3), 2 / (4 + 3 - 2), 0 / 1]
    assert scores["mIoU"] == pytest.approx(sum(iou) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 8)
    assert scores["mean_accuracy"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert segmentation_scores(torch.zeros(3, 3, dtype=torch.int64)) == {
        "mIoU": 0.0,
        "pixel_accuracy": 0.0,
        "mean_accuracy": 0.0,
    }
    with pytest.raises(RepAdapterError, match="square"):
        segmentation_scores(torch.zeros(2, 3))


def test_ignored_pixels_never_count():
    targets = torch.tensor([[[0, 1], [IGNORE_INDEX, 1]]])
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0] = 1.0  # predicts class 0 everywhere
    matrix = confusion(logits, targets, 3)
    assert matrix.sum() == 3 and matrix[0, 0] == 1 and matrix[1, 0] == 2
    scores = segmentation_scores(matrix)
    assert scores["mIoU"] == pytest.approx((1 / 3 + 0) / 2) and scores["pixel_accuracy"] == pytest.approx(
        1 / 3
    )
    # the loss reads the same pixels, and an all-ignored batch gives 0, not NaN
    everywhere_wrong = segmentation_loss(logits, torch.full((1, 2, 2), 1))
    assert segmentation_loss(logits, targets) < everywhere_wrong
    ignored = torch.full((1, 2, 2), IGNORE_INDEX)
    assert segmentation_loss(logits.requires_grad_(), ignored).item() == 0.0


# --- sliding windows --------------------------------------------------------------------------


def test_slide_equals_plain_when_the_window_is_the_image():
    model = segmenter("vit")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(slide_logits(model, x, (32, 32), (16, 16), NUM_CLASSES), model(x))
        assert torch.equal(predict_segmentation(model, x), model(x))  # resize eval: one window
        wide = torch.randn(1, 3, 32, 80)  # slide eval: windows every 21 px, averaged
        assert torch.equal(
            predict_segmentation(model, wide), slide_logits(model, wide, (32, 32), (21, 21), 5)
        )
        wrapped = Wrapper(model)  # as DistributedDataParallel holds it
        assert torch.equal(
            predict_segmentation(wrapped, wide), slide_logits(model, wide, (32, 32), (21, 21), 5)
        )
        with pytest.raises(RepAdapterError, match="needs a Segmenter"):
            predict_segmentation(nn.Conv2d(3, 5, 1), x)


def test_slide_averages_overlapping_windows_and_pads_small_images():
    conv = nn.Conv2d(3, NUM_CLASSES, 1)  # per pixel: every window agrees with the whole image
    x = torch.randn(2, 3, 37, 50)
    with torch.no_grad():
        assert torch.allclose(slide_logits(conv, x, (16, 24), (10, 7), NUM_CLASSES), conv(x), atol=1e-6)
        small = x[:, :, :9, :11]
        assert torch.allclose(
            slide_logits(conv, small, (16, 24), (8, 8), NUM_CLASSES), conv(small), atol=1e-6
        )

    calls = []

    def spy(window):
        calls.append(window.shape[-2:])
        return torch.zeros(window.shape[0], NUM_CLASSES, *window.shape[-2:])

    slide_logits(spy, torch.zeros(1, 3, 40, 40), (32, 32), (21, 21), NUM_CLASSES)
    assert len(calls) == 4  # offsets 0 and 8 on each side: the last flush with the edge
    with pytest.raises(RepAdapterError, match="stride <= window"):
        slide_logits(conv, x, (16, 16), (17, 8), NUM_CLASSES)
    with pytest.raises(RepAdapterError, match="dense model"):
        slide_logits(lambda w: torch.zeros(w.shape[0], NUM_CLASSES), x, (16, 16), (16, 16), NUM_CLASSES)


# --- the task kind, end to end ----------------------------------------------------------------


def test_task_kind_trains_and_scores_a_mask_folder(tmp_path):
    from PIL import Image
    from torch.utils.data import DataLoader

    from repadapter.training.data.segmentation import load_mask_folder

    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    rng = np.random.default_rng(0)
    for split, shapes in (("train", [(32, 32), (40, 36)]), ("test", [(32, 48), (40, 32), (32, 32)])):
        for i, (h, w) in enumerate(shapes):
            for folder in ("images", "masks"):
                (tmp_path / split / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                tmp_path / split / "images" / f"{i}.png"
            )
            mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
            mask[0] = 255
            Image.fromarray(mask).save(tmp_path / split / "masks" / f"{i}.png")
    task = load_mask_folder(tmp_path)
    cfg = TrainConfig(task="segmentation", model="vit_tiny6_patch4_32", pretrained=False, seg_eval="slide")
    model = ra.inject(SEGMENTATION.build_model(cfg, task.num_classes), ra.RepAdapterConfig(dim=4, groups=2))
    prep = SEGMENTATION.preprocessing(model, "model")

    images, masks = next(
        iter(DataLoader(SEGMENTATION.train_dataset(task.split("train"), prep, cfg), batch_size=2))
    )
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)
    loss = SEGMENTATION.loss(model(images), masks)
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(".repadapter." in n or n.startswith("decode_head.") for n in grads)

    shard = SEGMENTATION.eval_dataset(task.split("test"), prep, cfg)
    model.eval()
    matrix = torch.zeros(3, 3, dtype=torch.int64)
    with torch.inference_mode():
        for x, y in DataLoader(shard, batch_size=3, collate_fn=shard.collate_fn):
            assert x.shape == (3, 3, 40, 48)  # short sides to 32, padded to the largest
            matrix += confusion(SEGMENTATION.predict(model, x), y, 3)
    assert matrix.sum() == 31 * 48 + 39 * 32 + 31 * 32  # every pixel but the ignored first rows
    scores = SEGMENTATION.score(matrix)
    assert set(scores) == {"mIoU", "pixel_accuracy", "mean_accuracy"} and 0 <= scores["mIoU"] <= 1


@pytest.mark.parametrize("kind", ["vit", "swin"])
def test_a_model_is_matched_to_the_levels_of_a_trained_head(kind):
    trained = segmenter(kind, levels=2)
    tensors = {k: v for k, v in trained.state_dict().items() if k.startswith("decode_head.")}
    one_level = segmenter(kind, levels=1)
    matched = match_trained_head(one_level, tensors)
    assert matched.levels == 2 and matched.backbone is one_level.backbone
    assert match_trained_head(trained, tensors) is trained
    assert match_trained_head(trained, {}) is trained  # a file without a head: nothing to match
    wrong = {"decode_head.proj.weight": torch.zeros(32, 7, 1, 1)}
    with pytest.raises(RepAdapterError, match="reads 7 channels, which no number"):
        match_trained_head(one_level, wrong)
