"""Expectation-maximisation with the shipped digits prior on held-out digits: the kernel of
a blurred digit and an unknown gain (moved from tests/guided/test_em.py, since they need the
held-out data of experiments.shared.data)."""

import itertools

import pytest
import torch

from torch import Tensor

import guided
import operators
import priors


def _blurred_digit(sigma_y=0.02):
    digits = priors.load("digits")
    x = _digit()
    truth = operators.gaussian_kernel(1.0, size=5)
    g = torch.Generator().manual_seed(0)
    y = operators.GaussianNoise(sigma_y)(operators.CircularBlur(truth, digits.shape)(x), g)
    return digits, x, truth, y


def _kernel_error(op, truth):
    return float((op.kernel.detach()[0] - truth).norm() / truth.norm())


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
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
    from experiments.shared.data import Digits

    return Digits("test").evaluation()[0][:1]


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
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
