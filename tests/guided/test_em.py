"""Expectation-maximisation for unknown operators: exact M-steps, constraints, the blind
posterior sampler on the digits prior, and errors."""

import pytest
import torch

from torch import Tensor, nn

import guided
import operators


def _images(shape, n=2, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def test_least_squares_m_step_recovers_a_kernel_exactly():
    shape = (1, 16, 16)
    x = _images(shape)
    truth = operators.gaussian_kernel(1.2, size=5)
    y = operators.CircularBlur(truth, shape)(x[:1])
    op = operators.BlindBlur(shape, kernel_size=5)  # starts at a Dirac
    guided.LeastSquaresMStep()(op, x[:1].expand(3, -1, -1, -1), y, 0.1)
    torch.testing.assert_close(op.kernel.detach(), truth[None], atol=1e-6, rtol=0)


def test_least_squares_m_step_gains_mixing_and_active_constraints():
    shape = (3, 8, 8)
    x = _images(shape, n=1, seed=1)
    gains = operators.ChannelGain(shape)
    guided.LeastSquaresMStep()(gains, x, torch.tensor([2.0, -1.0, 0.5]).view(3, 1, 1) * x, 0.1)
    # separable: the negative gain's least-squares value is clipped to the constraint g >= 0
    torch.testing.assert_close(gains.gain.detach(), torch.tensor([2.0, 0.0, 0.5]).double())
    truth = torch.tensor([[0.6, 0.3, 0.1], [0.0, 1.0, 0.0]], dtype=torch.float64)
    mixing = operators.ChannelMixing(shape, out_channels=2)
    y = torch.einsum("oi,bihw->bohw", truth.float(), x)
    guided.LeastSquaresMStep()(mixing, x, y, 0.1)
    torch.testing.assert_close(mixing.matrix.detach(), truth, atol=1e-6, rtol=0)
    # a blur that loses half the light has no simplex kernel: the estimate stays on it
    blur = operators.BlindBlur((1, 16, 16), kernel_size=3)
    z = _images((1, 16, 16), n=1, seed=2)
    guided.LeastSquaresMStep()(
        blur, z, 0.5 * operators.CircularBlur(torch.ones(3, 3) / 9, (1, 16, 16))(z), 0.1
    )
    k = blur.kernel.detach()
    assert float(k.min()) >= 0 and abs(float(k.sum()) - 1) < 1e-9


class _SquaredGain(operators.UnknownOperator):
    """y = theta^2 x: not linear in its unknown."""

    def __init__(self, shape):
        super().__init__(shape, shape)
        self.theta = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    def apply(self, x: Tensor) -> Tensor:
        return self.theta.to(x.dtype) ** 2 * x

    def project(self) -> None:
        with torch.no_grad():
            self.theta.clamp_(min=0)


def test_gradient_m_step_handles_operators_nonlinear_in_their_unknowns():
    x = _images((4,), n=3, seed=3)
    op = _SquaredGain((4,))
    with pytest.raises(ValueError, match="linear in its unknowns"):
        guided.LeastSquaresMStep()(op, x, 4.0 * x[:1], 0.1)
    guided.GradientMStep(steps=300, lr=0.05)(op, x[:1], 4.0 * x[:1], 0.1)
    assert abs(float(op.theta.detach()) - 2.0) < 1e-3 and op.theta.grad is None
    # on a linear operator it reaches the exact M-step's answer
    shape = (1, 12, 12)
    z = _images(shape, n=1, seed=4)
    y = operators.CircularBlur(operators.gaussian_kernel(0.8, size=3), shape)(z)
    exact, adam = operators.BlindBlur(shape, 3), operators.BlindBlur(shape, 3)
    guided.LeastSquaresMStep(penalty=1.0)(exact, z, y, 0.1)
    guided.GradientMStep(steps=400, lr=0.01, penalty=1.0)(adam, z, y, 0.1)
    torch.testing.assert_close(adam.kernel.detach(), exact.kernel.detach(), atol=2e-3, rtol=0)


def test_em_errors_name_the_problem():
    shape = (1, 16, 16)
    y = torch.zeros(1, *shape)
    with pytest.raises(TypeError, match="has none"):
        guided.ExpectationMaximization(operators.CircularBlur(torch.ones(3, 3) / 9, shape), y, 0.1)
    op = operators.BlindBlur(shape, 3)
    with pytest.raises(ValueError, match="one measurement"):
        guided.ExpectationMaximization(op, torch.zeros(2, *shape), 0.1)
    with pytest.raises(ValueError, match="start"):
        guided.ExpectationMaximization(op, y, 0.1, start=0.0)
    with pytest.raises(TypeError, match="m_step"):
        guided.ExpectationMaximization(op, y, 0.1, m_step="least squares")
    with pytest.raises(ValueError, match="reg"):
        guided.LeastSquaresMStep(reg=-1.0)
    with pytest.raises(ValueError, match="sigma_y must be > 0"):
        guided.ExpectationMaximization(op, y, 0.0)
    with pytest.raises(ValueError, match="rounds"):
        guided.DiffusionEM(op, y, 0.1, rounds=0)
    with pytest.raises(ValueError, match="centring"):
        operators.BlindBlur(shape, 3, centring=-1.0)
    op.kernel.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters"):
        guided.ExpectationMaximization(op, y, 0.1)
