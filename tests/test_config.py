import pytest

from repadapter import RepAdapterConfig, RepAdapterError


def test_defaults_are_the_paper_vit_setting():
    config = RepAdapterConfig()
    assert (config.dim, config.groups, config.placement, config.dropout) == (8, 2, "block", 0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"placement": "ffn"}, "placement='ffn' is not supported"),
        ({"dim": 0}, "dim must be a positive integer"),
        ({"groups": 0}, "groups must be a positive integer"),
        ({"dim": 8, "groups": 3}, "dim=8 is not divisible by groups=3"),
        ({"scale": float("nan")}, "scale must be a finite number"),
        ({"scale": 0.0}, "scale must be a finite number above 0"),
        ({"scale": -0.5}, "scale must be a finite number above 0"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"trainable": "norm"}, "trainable must be a sequence"),
    ],
)
def test_bad_values_name_the_problem(kwargs, message):
    with pytest.raises(RepAdapterError, match=message):
        RepAdapterConfig(**kwargs)


def test_dict_round_trip_and_unknown_keys():
    config = RepAdapterConfig(dim=4, groups=4, scale=0.5, placement="attn", trainable=("norm",))
    assert RepAdapterConfig.from_dict(config.to_dict()) == config
    with pytest.raises(RepAdapterError, match="unknown RepAdapterConfig keys"):
        RepAdapterConfig.from_dict({**config.to_dict(), "rank": 3})
