"""Video backbones: the in-house VideoMAE inflated from the packaged image ViT, hf: folders."""

import pickle

import pytest
import torch

import repadapter as ra
from repadapter import RepAdapterError
from repadapter.families.building import add_drop_path
from repadapter.families.factory import create
from repadapter.families.video import VIDEOMAE_BRANCHES, VIDEOMAE_LAYER, create_video_model, is_video_model
from repadapter.tuner.adapter_files import _base_model_name

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def image_vit():
    return create("vit_tiny6_patch4_32.fmnist", pretrained=True).eval()


@pytest.fixture(scope="module")
def inflated():
    return create_video_model("videomae_tiny6_patch4_32.fmnist", 10).eval()


def _static_clip(frames: int = 8):
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return image, image[:, None].repeat(1, frames, 1, 1, 1)


def test_a_static_clip_embeds_like_the_image(image_vit, inflated):
    image, clip = _static_clip()
    with torch.no_grad():
        tubelets = inflated.videomae.embeddings.patch_embeddings(clip)  # (B, 4 time slots * 64, 192)
        patches = image_vit.patch_embed(image)  # (B, 64, 192)
    assert tubelets.shape == (2, 4 * 64, 192)
    assert (tubelets - patches.repeat(1, 4, 1)).abs().max() <= 1e-5


def test_dropping_the_key_bias_leaves_attention_unchanged(image_vit):
    """q . b_k is the same for every key of a query, so softmax over keys ignores it."""
    attn = image_vit.blocks[0].attn
    x = torch.randn(2, 17, 192, generator=torch.Generator().manual_seed(2))
    big, none, shifted_q = (pickle.loads(pickle.dumps(attn)) for _ in range(3))
    noise = torch.randn(192, generator=torch.Generator().manual_seed(3)) * 3
    with torch.no_grad():
        big.qkv.bias[192:384] = noise
        none.qkv.bias[192:384] = 0
        shifted_q.qkv.bias[:192] += noise  # the check can fail: a query bias does matter
        assert (big(x) - none(x)).abs().max() <= 1e-5 * none(x).abs().max()
        assert (shifted_q(x) - attn(x)).abs().max() > 1e-2


def test_inflated_model_is_the_image_vit_on_a_static_clip_but_for_positions_and_pooling(image_vit, inflated):
    """Run the image ViT's own blocks on the clip's tokens, with VideoMAE's sinusoid positions and
    mean pooling (the two things that cannot transfer): every mapped weight must give the same logits."""
    image, clip = _static_clip()
    with torch.no_grad():
        tokens = (
            image_vit.patch_embed(image).repeat(1, 4, 1) + inflated.videomae.embeddings.position_embeddings
        )
        for block in image_vit.blocks:
            tokens = block(tokens)
        norm = image_vit.norm
        pooled = torch.nn.functional.layer_norm(tokens.mean(1), (192,), norm.weight, norm.bias, eps=1e-5)
        expected = image_vit.head(pooled)
        logits = inflated(pixel_values=clip).logits
    assert (logits - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_inflated_state_loads_strictly_and_records_a_timm_like_cfg(inflated):
    fresh = create_video_model("videomae_tiny6_patch4_32", 10, pretrained=False)
    fresh.load_state_dict(inflated.state_dict(), strict=True)
    assert not any("position" in name for name in inflated.state_dict())  # a fixed table, not a weight
    cfg = inflated.pretrained_cfg
    assert cfg["architecture"] == "videomae_tiny6_patch4_32" and cfg["tag"] == "fmnist"
    assert cfg["input_size"] == (3, 32, 32) and cfg["num_frames"] == 8 and cfg["classifier"] == "classifier"
    assert cfg["mean"] == (0.5, 0.5, 0.5) and inflated.num_classes == 10
    assert fresh.pretrained_cfg["tag"] is None
    adapted = ra.inject(create_video_model("videomae_tiny6_patch4_32.fmnist", 4), ra.RepAdapterConfig(dim=2))
    assert adapted.classifier.out_features == 4
    assert _base_model_name(adapted) == "videomae_tiny6_patch4_32.fmnist"


def test_other_sizes_frames_and_checkpoints(tmp_path, image_vit):
    model = create_video_model("videomae_tiny6_patch4_32", 3, pretrained=False, img_size=48, num_frames=4)
    assert model.pretrained_cfg["input_size"] == (3, 48, 48) and model.pretrained_cfg["num_frames"] == 4
    assert model(pixel_values=torch.zeros(1, 4, 3, 48, 48)).logits.shape == (1, 3)
    with pytest.raises(RepAdapterError, match="multiple of the tubelet size"):
        create_video_model("videomae_tiny6_patch4_32", 3, num_frames=5)
    with pytest.raises(RepAdapterError, match="unknown video model"):
        create_video_model("videomae_base", 3)
    # a timm image-ViT checkpoint is inflated; a head of another size is dropped
    from safetensors.torch import save_file

    save_file(image_vit.state_dict(), str(tmp_path / "vit.safetensors"))
    from_file = create_video_model(
        "videomae_tiny6_patch4_32", 3, checkpoint=str(tmp_path / "vit.safetensors")
    )
    torch.testing.assert_close(from_file.fc_norm.weight, image_vit.norm.weight)
    with pytest.raises(RepAdapterError, match="does not exist"):
        create_video_model("videomae_tiny6_patch4_32", 3, checkpoint=str(tmp_path / "none.pt"))
    assert is_video_model("hf:some/repo") and is_video_model("videomae_tiny6_patch4_32.fmnist")
    assert not is_video_model("vit_tiny6_patch4_32.fmnist")


def test_hf_folder_gets_a_new_classifier_and_imagenet_statistics(tmp_path):
    config = transformers.VideoMAEConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=16, patch_size=4, num_frames=4, num_labels=7,
    )  # fmt: skip
    base = transformers.VideoMAEForVideoClassification(config)
    base.save_pretrained(tmp_path / "base")
    model = create_video_model(f"hf:{tmp_path / 'base'}", 3)
    assert model.classifier.out_features == 3 and model.pretrained_cfg["input_size"] == (3, 16, 16)
    assert model.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)
    torch.testing.assert_close(model.fc_norm.weight, base.fc_norm.weight)
    with pytest.raises(RepAdapterError, match="cannot load a VideoMAE"):
        create_video_model(f"hf:{tmp_path / 'missing'}", 3)


def test_drop_path_drops_whole_branches_in_training_only():
    model = create_video_model("videomae_tiny6_patch4_32", 3, pretrained=False, drop_path=0.5)
    layer = model.videomae.encoder.layer[-1]
    x = torch.randn(64, 5, 192)
    with torch.no_grad():
        model.eval()
        assert torch.equal(layer.attention(x), layer.attention(x))
        model.train()
        out = layer.attention(x)
    dropped = (out.flatten(1).abs().sum(1) == 0).float().mean().item()
    assert 0.2 < dropped < 0.8
    assert not model.videomae.encoder.layer[0].attention._forward_hooks  # rate rises from 0
    pickle.loads(pickle.dumps(model))
    with pytest.raises(RepAdapterError, match="drop_path"):
        add_drop_path(model, 1.0, VIDEOMAE_LAYER, VIDEOMAE_BRANCHES)
