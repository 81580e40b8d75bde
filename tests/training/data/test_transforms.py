import pytest
import timm
from PIL import Image

from repadapter import RepAdapterError
from repadapter.training.data.transforms import (
    IMAGENET_MEAN,
    eval_transform,
    fewshot_train_transform,
    preprocessing,
)


def test_model_normalization_by_default_imagenet_on_request():
    model = timm.create_model("vit_base_patch16_224.orig_in21k", pretrained=False, depth=1)
    own = preprocessing(model)
    assert own["mean"] == [0.5, 0.5, 0.5] and own["input_size"] == [224, 224]
    assert preprocessing(model, "imagenet")["mean"] == list(IMAGENET_MEAN)
    with pytest.raises(RepAdapterError, match="normalization 'clip'"):
        preprocessing(model, "clip")


def test_transforms_resize_to_the_size_the_model_was_built_at():
    model = timm.create_model("vit_tiny_patch16_224", img_size=48, depth=1)
    prep = preprocessing(model)
    image = Image.new("RGB", (100, 60), (255, 0, 0))
    assert eval_transform(prep)(image).shape == (3, 48, 48)
    assert fewshot_train_transform(prep)(image).shape == (3, 48, 48)
