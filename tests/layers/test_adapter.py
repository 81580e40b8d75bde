import math

import pytest
import torch

from repadapter import GroupedLinear, RepAdapter, RepAdapterError


def randomized(adapter: RepAdapter, seed: int = 0) -> RepAdapter:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapter.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return adapter


def test_paper_reference_size():
    adapter = RepAdapter(768, dim=8, groups=2)
    assert sum(p.numel() for p in adapter.down.parameters()) == 6152
    assert sum(p.numel() for p in adapter.up.parameters()) == 3840
    assert sum(p.numel() for p in adapter.parameters()) == 9992


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fresh_adapter_is_an_exact_identity(mode):
    adapter = RepAdapter(64, dim=8, groups=2, dropout=0.5)
    adapter.train(mode == "train")
    x = torch.randn(3, 5, 64)
    assert torch.equal(adapter(x), x)
    assert adapter.down.weight.abs().sum() > 0  # down is random, up and biases are zero
    assert adapter.up.weight.abs().sum() == 0 and adapter.up.bias.abs().sum() == 0
    assert adapter.down.bias.abs().sum() == 0


def test_down_is_xavier_uniform():
    adapter = RepAdapter(768, dim=8)
    bound = math.sqrt(6 / (768 + 8))
    weight = adapter.down.weight
    assert weight.abs().max() <= bound
    assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_up_is_block_diagonal():
    up = GroupedLinear(8, 12, groups=4)
    with torch.no_grad():
        up.weight.normal_()
        up.bias.normal_()
    dense = up.dense_weight()
    for g in range(4):  # output rows of group g read only hidden columns of group g
        outside = torch.ones(8, dtype=torch.bool)
        outside[2 * g : 2 * g + 2] = False
        assert dense[3 * g : 3 * g + 3][:, outside].abs().sum() == 0
        assert dense[3 * g : 3 * g + 3][:, ~outside].abs().sum() > 0
    hidden = torch.randn(5, 8)
    torch.testing.assert_close(up(hidden), hidden @ dense.T + up.bias)
    # Output group 0 ignores hidden channels outside group 0.
    moved = hidden.clone()
    moved[:, 2:] += 1.0
    torch.testing.assert_close(up(moved)[:, :3], up(hidden)[:, :3])


def test_scale_multiplies_the_up_bias_too():
    adapter = RepAdapter(16, dim=4, groups=2, scale=5.0)
    with torch.no_grad():
        adapter.up.bias.fill_(0.25)
    x = torch.randn(2, 16)
    torch.testing.assert_close(adapter.eval()(x), x + 5.0 * 0.25)


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
@pytest.mark.parametrize("bias", [True, False])
def test_affine_form_is_the_eval_forward(groups, bias):
    adapter = randomized(RepAdapter(32, dim=8, groups=groups, scale=0.7, bias=bias)).eval()
    x = torch.randn(6, 32, dtype=torch.float64)
    affine = adapter.affine()
    expected = adapter.double()(x)
    torch.testing.assert_close(affine(x), expected)
    torch.testing.assert_close(x @ affine.matrix.T + affine.shift, expected)
    assert affine.matrix.dtype == torch.float64


def test_no_activation_the_adapter_is_linear_in_its_input():
    adapter = randomized(RepAdapter(16, dim=4, groups=2, bias=False)).eval()
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    torch.testing.assert_close(adapter(a + 2 * b), adapter(a) + 2 * adapter(b))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dim": 6, "groups": 4}, "must divide both dim=6"),
        ({"in_features": 30, "groups": 4}, "in_features=30"),
    ],
)
def test_indivisible_groups_are_refused(kwargs, message):
    args = {"in_features": 32, "dim": 8, **kwargs}
    with pytest.raises(RepAdapterError, match=message):
        RepAdapter(**args)


def _down_grads(adapter, norm, x, recompute):
    """Gradients of the adapter, the norm and the input through ``adapter(norm(x))``."""
    for param in [*adapter.parameters(), *norm.parameters(), x]:
        param.grad = None
    torch.manual_seed(0)  # the same dropout mask both ways
    y = norm(x)
    adapter(y, (norm, x) if recompute else None).pow(2).sum().backward()
    return [p.grad.clone() for p in [*adapter.parameters(), *norm.parameters(), x]]


def test_an_adapter_after_a_norm_recomputes_its_input_with_the_same_gradients():
    adapter = randomized(RepAdapter(16, dim=4, groups=2, dropout=0.3)).train()
    norm = torch.nn.LayerNorm(16)
    randomized(norm)  # non-zero weight and bias
    x = torch.randn(2, 5, 16, requires_grad=True)
    expected = _down_grads(adapter, norm, x, recompute=False)
    for got, want in zip(_down_grads(adapter, norm, x, recompute=True), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("change", ["norm weight", "norm input"])
def test_changing_what_the_recomputation_reads_in_place_is_an_error(change):
    adapter = randomized(RepAdapter(16, dim=4, groups=2)).train()
    norm = torch.nn.LayerNorm(16)
    x = torch.randn(2, 5, 16).requires_grad_()
    source = x * 1.0  # a non-leaf, so it may be changed in place
    out = adapter(norm(source), (norm, source)).sum()
    with torch.no_grad():
        (norm.weight if change == "norm weight" else source).add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()
