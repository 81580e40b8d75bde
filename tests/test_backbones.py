import pytest

from repadapter import RepAdapterError
from repadapter.backbones import create


def test_known_names_build_with_their_arguments():
    model = create("vit_tiny_patch16_224", num_classes=3, depth=1)
    assert model.num_classes == 3 and len(model.blocks) == 1


def test_unknown_names_suggest_real_ones():
    with pytest.raises(RepAdapterError, match="unknown model 'vit_tiyn_patch16_224'.*vit_"):
        create("vit_tiyn_patch16_224")
