import pytest
import torch
from torch import nn

from repadapter import RepAdapterError
from repadapter.layers.fold import AffineMap, fold_into, unfold_from


def random_affine(d: int = 12, r: int = 4, scale: float = 0.8, seed: int = 0) -> AffineMap:
    g = torch.Generator().manual_seed(seed)
    kw = {"generator": g, "dtype": torch.float64}
    return AffineMap(
        up=torch.randn(d, r, **kw) * 0.3,
        down=torch.randn(r, d, **kw) * 0.3,
        scale=scale,
        shift=torch.randn(d, **kw),
    )


def test_low_rank_operations_match_dense_algebra():
    affine = random_affine()
    weight = torch.randn(5, 12, dtype=torch.float64)
    matrix = affine.matrix
    torch.testing.assert_close(affine.right_multiply(weight), weight @ matrix)
    torch.testing.assert_close(affine.right_solve(weight, "t"), weight @ torch.linalg.inv(matrix))
    torch.testing.assert_close(matrix @ affine.inverse_shift("t"), affine.shift)


def linear(bias: bool, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(12, 7, bias=bias, dtype=torch.float64)
    if bias:
        nn.init.normal_(layer.bias)
    return layer


@pytest.mark.parametrize("with_sink", [False, True])
def test_fold_then_unfold_round_trip(with_sink):
    affine = random_affine()
    consumers = [linear(bias=not with_sink, seed=s) for s in (1, 2)]
    sink = nn.LayerNorm(12, dtype=torch.float64) if with_sink else None
    if sink is not None:
        nn.init.normal_(sink.bias)
    originals = [(c.weight.clone(), None if c.bias is None else c.bias.clone()) for c in consumers]
    sink_bias = None if sink is None else sink.bias.clone()
    x = torch.randn(9, 12, dtype=torch.float64)
    y = x if sink is None else sink(x)
    expected = [c(affine(y)) for c in consumers]

    fold_into(consumers, sink, affine, "test")
    y_folded = x if sink is None else sink(x)
    for c, e in zip(consumers, expected, strict=True):
        torch.testing.assert_close(c(y_folded), e)

    unfold_from(consumers, sink, affine, "test")
    for c, (w, b) in zip(consumers, originals, strict=True):
        torch.testing.assert_close(c.weight, w)
        if b is not None:
            torch.testing.assert_close(c.bias, b)
    if sink is not None:
        torch.testing.assert_close(sink.bias, sink_bias)


def test_fold_is_computed_in_float64_and_cast_once():
    affine = random_affine()
    layer = linear(bias=True, seed=3).to(torch.bfloat16)
    exact_w = layer.weight.double() @ affine.matrix
    fold_into([layer], None, affine, "test")
    assert layer.weight.dtype == torch.bfloat16
    assert torch.equal(layer.weight, exact_w.to(torch.bfloat16))  # one rounding, no more


def test_singular_adapter_is_refused_where_an_inverse_is_needed():
    d = 6
    up = torch.zeros(d, 1, dtype=torch.float64)
    down = torch.zeros(1, d, dtype=torch.float64)
    up[0, 0], down[0, 0] = 1.0, 1.0  # M = I + s*e0 e0^T is singular at s = -1
    affine = AffineMap(up=up, down=down, scale=-1.0, shift=torch.ones(d, dtype=torch.float64))
    with pytest.raises(RepAdapterError, match="blocks.3.attn is \\(nearly\\) singular"):
        affine.inverse_shift("blocks.3.attn")
    with pytest.raises(RepAdapterError, match="singular"):
        unfold_from([nn.Linear(d, 2)], None, affine, "blocks.3.attn")
