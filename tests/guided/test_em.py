"""Expectation-maximisation for unknown operators: exact M-steps, constraints, the blind
posterior sampler on the digits prior, and errors."""

import itertools

import pytest
import torch

from torch import Tensor, nn

import guided
import operators
import priors


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


def _blurred_digit(sigma_y=0.02):
    digits = priors.load("digits")
    x = _digit()
    truth = operators.gaussian_kernel(1.0, size=5)
    g = torch.Generator().manual_seed(0)
    y = operators.GaussianNoise(sigma_y)(operators.CircularBlur(truth, digits.shape)(x), g)
    return digits, x, truth, y


def _kernel_error(op, truth):
    return float((op.kernel.detach()[0] - truth).norm() / truth.norm())


def test_diffusion_em_estimates_the_kernel_of_a_blurred_digit():
    digits, x, truth, y = _blurred_digit()
    op = operators.BlindBlur(digits.shape, kernel_size=5)  # a Dirac: no blur
    dirac_error = _kernel_error(op, truth)
    em = guided.DiffusionEM(op, y, 0.02, m_step=guided.LeastSquaresMStep(penalty=3000), rounds=1)
    x_T = guided.initial_noise(
        digits.schedule, (4, *digits.shape), torch.Generator().manual_seed(1)
    )
    ts, cost = guided.time_grid(30), priors.Cost()
    blind = em(digits, guided.DDIM(), x_T, ts, cost=cost)
    assert _kernel_error(op, truth) < 0.3 * dirac_error and len(em.trace) == 1
    assert cost.nfe == 60 and cost.vjp == 60  # two samplings
    wrong = guided.GuidedDenoiser(
        digits, guided.PiGDM(operators.BlindBlur(digits.shape, 5).known(), y, 0.02)
    )
    fixed = guided.DDIM()(wrong, x_T, ts)

    def error(s):
        return float((s.mean(0) - x[0]).square().mean())

    assert error(blind) < 0.7 * error(fixed)


def test_fast_em_updates_the_estimate_at_every_evaluation_after_start():
    digits, _, truth, y = _blurred_digit()
    op = operators.BlindBlur(digits.shape, kernel_size=5)
    em = guided.ExpectationMaximization(op, y, 0.02, start=0.5)
    x_T = guided.initial_noise(digits.schedule, (2, *digits.shape), torch.Generator())
    cost, ts = priors.Cost(), guided.time_grid(10)
    sample = guided.DDIM()(guided.GuidedDenoiser(digits, em), x_T, ts, cost=cost)
    assert [t for t, _ in em.trace] == [float(t) for t in ts[:-1] if float(t) <= 0.5]
    assert cost.nfe == 10 and cost.vjp == 10 and bool(torch.isfinite(sample).all())
    torch.testing.assert_close(em.trace[-1][1], op.kernel.detach().flatten())
    assert isinstance(em.estimate(), operators.CircularBlur)
    assert _kernel_error(op, truth) != _kernel_error(operators.BlindBlur(digits.shape, 5), truth)


def _digit() -> Tensor:
    from experiments.data import Digits

    return Digits("test").evaluation()[0][:1]


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


def test_diffusion_em_estimates_an_unknown_gain_of_a_digit():
    """y = 0.6 x + noise, the gain unknown (starting at 1): the exact M-step of the gain and
    PiGDM E-steps bring it to the truth within four rounds (the prior knows the digits'
    background level, which fixes the scale)."""
    digits, x = priors.load("digits"), _digit()
    y = operators.GaussianNoise(0.02)(0.6 * x, torch.Generator().manual_seed(0))
    op = operators.ChannelGain(digits.shape)
    em = guided.DiffusionEM(op, y, 0.02, rounds=4)
    x_T = guided.initial_noise(
        digits.schedule, (4, *digits.shape), torch.Generator().manual_seed(1)
    )
    em(digits, guided.DDIM(), x_T, guided.time_grid(30))
    gains = [float(theta[0]) for theta in em.trace]
    assert all(a > b for a, b in itertools.pairwise([1.0, *gains]))  # monotone from 1
    assert abs(gains[-1] - 0.6) < 0.05, gains
