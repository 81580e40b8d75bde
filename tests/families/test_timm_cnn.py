"""timm EfficientNet-class and ResNet CNNs: adapters before pointwise convolutions, shifts into
the following BatchNorm's running mean."""

import timm
import torch

import repadapter as ra
from repadapter.families import family_of


def test_efficientnet_sites_pair_each_pointwise_conv_with_its_batch_norm():
    model = timm.create_model("mobilenetv2_100", num_classes=5)
    sites = family_of(model).sites(model, "block")
    assert sites[0].host == "blocks.0.0.conv_pw" and sites[0].batch_norms == ("blocks.0.0.bn2",)
    assert sites[1].host == "blocks.1.0.conv_pw" and sites[1].batch_norms == ("blocks.1.0.bn1",)
    assert sites[2].host == "blocks.1.0.conv_pwl" and sites[2].batch_norms == ("blocks.1.0.bn3",)
    assert sites[-1].host == "conv_head" and all(s.channels_first for s in sites)


def test_the_shift_lands_in_the_running_mean_and_comes_back(tmp_path):
    model = timm.create_model("resnet50", num_classes=5).eval()
    mean = model.layer1[0].bn1.running_mean.clone()
    ra.perturb_adapters(ra.inject(model))
    assert model.layer1[0].conv1.repadapter.down.bias is not None
    merged = ra.merge(model)
    assert not torch.equal(merged.layer1[0].bn1.running_mean, mean)
    restored = ra.unmerge(merged, ra.save_adapter(model, tmp_path / "a.safetensors"))
    torch.testing.assert_close(restored.layer1[0].bn1.running_mean, mean, atol=1e-6, rtol=0)


def test_basic_blocks_get_bias_free_adapters_before_padded_3x3_convs():
    model = ra.inject(timm.create_model("resnet18", num_classes=5))
    assert family_of(model).name == "timm_resnet"
    assert model.layer1[0].conv2.repadapter.down.bias is None
