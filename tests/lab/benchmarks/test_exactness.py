import pytest

from repadapter import RepAdapterConfig
from repadapter_lab.benchmarks.exactness import check_exactness, parse_model_spec


def test_model_specs_parse_literals():
    assert parse_model_spec("vit_tiny_patch16_224") == ("vit_tiny_patch16_224", {})
    assert parse_model_spec("vit_small_patch16_224:qkv_bias=False,depth=2") == (
        "vit_small_patch16_224",
        {"qkv_bias": False, "depth": 2},
    )
    with pytest.raises(ValueError, match="is not key=value"):
        parse_model_spec("vit:depth")
    with pytest.raises(ValueError, match="is not a Python literal"):
        parse_model_spec("vit:depth=two")


@pytest.mark.parametrize(
    "spec", ["vit_tiny_patch16_224:depth=2", "vit_small_patch16_224:qkv_bias=False,depth=2"]
)
def test_check_exactness_reports_tiny_errors(spec):
    result = check_exactness(spec, RepAdapterConfig(groups=4, scale=5.0))
    assert 0 < result.max_abs_logit_diff <= 1e-5
    assert 0 < result.max_rel_weight_error <= 1e-6
    assert result.adapter_params > 0


def test_unmerge_error_stays_within_the_float32_conditioning_bound():
    # Large random adapters at scale 10 make M = I + s*U@D ill-conditioned on purpose.
    result = check_exactness("vit_small_patch16_224:qkv_bias=False,depth=2", RepAdapterConfig(scale=10.0))
    assert result.max_condition > 10
    assert result.max_rel_weight_error <= 4 * result.unmerge_error_bound
    assert result.max_abs_logit_diff <= 1e-5
