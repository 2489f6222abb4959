"""Operators with unknowns: parameters, constraints and their projections."""

import pytest
import torch

from hypothesis import given, settings
from hypothesis import strategies as st

import operators


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**16), st.floats(0.1, 10))
def test_simplex_projection(n, seed, spread):
    v = spread * torch.randn(3, n, generator=torch.Generator().manual_seed(seed)).double()
    p = operators.project_simplex(v)
    assert float(p.min()) >= 0
    torch.testing.assert_close(p.sum(-1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(operators.project_simplex(p), p)  # idempotent
    # optimality (Duchi et al.): p is closer to v than a few other points of the simplex
    for q in (torch.full_like(v, 1 / n), torch.eye(n, dtype=torch.float64)[:1].expand_as(v)):
        assert bool(((p - v).norm(dim=-1) <= (q - v).norm(dim=-1) + 1e-12).all())


def test_blind_blur_learns_its_kernel_by_gradient_and_projection():
    g = torch.Generator().manual_seed(0)
    truth = operators.CircularBlur(operators.gaussian_kernel(1.0, size=5), (1, 16, 16))
    x = torch.randn(4, 1, 16, 16, generator=g, dtype=torch.float64)
    y = truth(x)
    op = operators.BlindBlur((1, 16, 16), kernel_size=5)
    assert float(op.kernel.detach()[0, 2, 2]) == 1  # starts as the identity
    optimiser = torch.optim.Adam(op.parameters(), lr=0.02)
    for _ in range(300):
        optimiser.zero_grad()
        (op(x) - y).pow(2).sum().backward()
        optimiser.step()
        op.project()
        assert float(op.kernel.min()) >= 0
        assert float(op.kernel.sum()) == pytest.approx(1, abs=1e-12)
    error = (op.kernel - truth.kernel).norm() / truth.kernel.norm()
    assert float(error) < 0.05
    known = op.known()
    assert isinstance(known, operators.SVDOperator)
    torch.testing.assert_close(known(x), op(x).detach())


def test_channel_gain_and_mixing():
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gain = operators.ChannelGain((3, 4, 4), torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(gain(x), x * torch.tensor([0.0, 1, 2]).view(3, 1, 1).double())
    # the closed-form pinv gives up the channel with gain 0
    assert float(gain.pinv(gain(x))[:, 0].abs().max()) == 0
    torch.testing.assert_close(gain.pinv(gain(x))[:, 1:], x[:, 1:])
    with torch.no_grad():
        gain.gain.copy_(torch.tensor([-1.0, 0.5, 3.0]))
    gain.project()
    torch.testing.assert_close(gain.gain, torch.tensor([0.0, 0.5, 3.0], dtype=torch.float64))
    mixing = operators.ChannelMixing((3, 4, 4), 2, torch.tensor([[0.2, 0.3, 0.5], [0, 0, 1]]))
    torch.testing.assert_close(mixing(x)[:, 1], x[:, 2])
    assert mixing.out_shape == (2, 4, 4)
    with torch.no_grad():
        mixing.matrix.add_(torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.3, 0.3]], dtype=torch.float64))
    mixing.project()
    assert float(mixing.matrix.min()) >= 0
    torch.testing.assert_close(mixing.matrix.sum(1), torch.ones(2, dtype=torch.float64))


def test_unknowns_are_parameters_and_bad_initial_values_raise():
    for op in (
        operators.BlindBlur((1, 8, 8), 3),
        operators.ChannelGain((3, 4, 4)),
        operators.ChannelMixing((3, 4, 4)),
    ):
        assert isinstance(op, operators.UnknownOperator)
        assert len(list(op.parameters())) == 1
    with pytest.raises(ValueError, match="negative"):
        operators.BlindBlur((1, 8, 8), kernel=torch.tensor([[0.5, -0.5, 1.0]]))
    with pytest.raises(ValueError, match="sum to 1"):
        operators.BlindBlur((1, 8, 8), kernel=torch.full((3, 3), 0.5))
    with pytest.raises(ValueError, match="odd"):
        operators.BlindBlur((1, 8, 8), kernel_size=4)
    with pytest.raises(ValueError, match="negative"):
        operators.ChannelGain((3, 4, 4), torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="3 finite"):
        operators.ChannelGain((3, 4, 4), torch.ones(2))
    with pytest.raises(ValueError, match="sum to 1"):
        operators.ChannelMixing((3, 4, 4), matrix=torch.eye(3) * 2)


def test_blind_blur_penalty_is_smoothness_plus_centring():
    op = operators.BlindBlur((1, 8, 8), kernel_size=5, centring=2.0)
    r = op.penalty()
    assert r.shape == (25, 25) and bool(torch.allclose(r, r.T))
    uniform = torch.full((25,), 1 / 25, dtype=torch.float64)
    assert abs(float(uniform @ r @ uniform)) < 1e-12  # flat and centred: no penalty
    shifted = torch.zeros(5, 5, dtype=torch.float64)
    shifted[0, 3] = 1.0  # offsets (-2, +1); on the top edge: three unit jumps to neighbours
    expected = 3 + 2.0 * (4 + 1)
    assert abs(float(shifted.flatten() @ r @ shifted.flatten()) - expected) < 1e-12
    assert bool((torch.linalg.eigvalsh(r) > -1e-10).all())
    assert not operators.ChannelGain((3, 4, 4)).penalty().any()
