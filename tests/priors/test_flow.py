"""Flow-matching priors: the rectified schedule with its exact ends, schedule derivatives, the
velocity parametrisation and a velocity field as a denoiser."""

import pytest
import torch

from hypothesis import given, settings
from hypothesis import strategies as st

import priors

from evaluation.problems import well_separated_mixture
from priors import tweedie
from tests.conftest import SCHEDULES

F64 = torch.float64


def test_the_rectified_schedule_is_the_straight_line_with_exact_ends():
    schedule = priors.RectifiedSchedule()
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64)
    alpha, sigma = schedule(t)
    torch.testing.assert_close(alpha, 1 - t, rtol=0, atol=0)
    torch.testing.assert_close(sigma, t, rtol=0, atol=0)
    d_alpha, d_sigma = schedule.derivatives(t)
    assert torch.equal(d_alpha, -torch.ones_like(t)) and torch.equal(d_sigma, torch.ones_like(t))
    lam = schedule.log_snr(t)
    assert lam[0] == float("inf") and lam[-1] == float("-inf")
    torch.testing.assert_close(schedule.time_of(lam), t, rtol=0, atol=1e-15)
    inner = torch.linspace(1e-6, 1 - 1e-6, 101, dtype=F64)
    back = schedule.time_of(schedule.log_snr(inner))
    torch.testing.assert_close(back, inner, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_derivatives_match_central_differences(name):
    schedule = SCHEDULES[name]()
    # between the nodes of the linear schedule's table, where it is smooth
    t = (torch.tensor([101, 347, 620, 888], dtype=F64) + 0.5) / 1000
    h = 1e-7
    (a_hi, s_hi), (a_lo, s_lo) = schedule(t + h), schedule(t - h)
    d_alpha, d_sigma = schedule.derivatives(t)
    assert d_alpha.dtype == d_sigma.dtype == F64 and d_alpha.shape == t.shape
    torch.testing.assert_close(d_alpha, (a_hi - a_lo) / (2 * h), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(d_sigma, (s_hi - s_lo) / (2 * h), rtol=1e-5, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(0.01, 0.99), min_size=1, max_size=6),
    st.sampled_from(sorted(SCHEDULES)),
    st.integers(0, 2**16),
)
def test_the_flow_velocity_is_the_time_derivative_and_inverts(t_values, name, seed):
    schedule = SCHEDULES[name]()
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor(t_values, dtype=F64)
    alpha, sigma = schedule(t)
    d_alpha, d_sigma = schedule.derivatives(t)
    x = torch.randn(len(t_values), 3, generator=g, dtype=F64)
    eps = torch.randn(x.shape, generator=g, dtype=F64)
    x_t = alpha[:, None] * x + sigma[:, None] * eps
    u = tweedie.flow_from_x0(x_t, x, alpha, sigma, d_alpha, d_sigma)
    # the definition: the velocity of x_t along the fixed (x, eps), the training target
    torch.testing.assert_close(u, d_alpha[:, None] * x + d_sigma[:, None] * eps)
    torch.testing.assert_close(tweedie.flow_from_noise(x, eps, d_alpha, d_sigma), u)
    back = tweedie.x0_from_flow(x_t, u, alpha, sigma, d_alpha, d_sigma)
    torch.testing.assert_close(back, x, rtol=1e-9, atol=1e-9)


def test_the_rectified_velocity_converts_at_both_ends():
    """At pure noise (t = 1, alpha = 0) x_hat = x_t - u; at t = 0, x_hat = x_t; each as a
    number and as per-row tensors, and the gradient through the conversion stays finite."""
    schedule = priors.RectifiedSchedule()
    x_t = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    u = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    for t in (1.0, 0.0):
        coefficients = (*schedule(t), *schedule.derivatives(t))
        expected = x_t - t * u
        torch.testing.assert_close(tweedie.x0_from_flow(x_t, u, *coefficients), expected)
    t = torch.tensor([1.0, 0.0, 0.5], dtype=F64)
    x = x_t.clone().requires_grad_(True)
    x_hat = tweedie.x0_from_flow(x, u, *schedule(t), *schedule.derivatives(t))
    torch.testing.assert_close(x_hat.detach(), x_t - t[:, None] * u)
    (grad,) = torch.autograd.grad(x_hat.sum(), x)
    assert torch.isfinite(grad).all()
    # and back: the velocity of a clean estimate at t = 0 takes eps_hat = 0, its limit
    clean = tweedie.flow_from_x0(x_t, x_t, *schedule(0.0), *schedule.derivatives(0.0))
    torch.testing.assert_close(clean, -x_t)


def test_the_likelihood_gain_is_zero_at_pure_noise():
    assert tweedie.likelihood_gain(0.5, 0.5) == pytest.approx(0.5)
    assert tweedie.likelihood_gain(0.0, 1.0) == 0.0
    gain = tweedie.likelihood_gain(torch.tensor([0.0, 0.5]), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(gain, torch.tensor([0.0, 0.5]))


def test_a_mixtures_velocity_field_is_the_mixture_as_a_denoiser():
    """The exact velocity field wrapped in a FlowDenoiser gives back the exact posterior mean at
    every time, pure noise and clean data included, one network evaluation per row."""
    schedule = priors.RectifiedSchedule()
    mixture = well_separated_mixture(8, schedule)
    flow = priors.FlowDenoiser(mixture.velocity, schedule, mixture.shape)
    assert flow.shape == (8,)
    x_t = 2 * torch.randn(6, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    for t in (0.0, 1e-9, 0.3, 0.999, 1.0):
        torch.testing.assert_close(flow(x_t, t), mixture(x_t, t), rtol=0, atol=1e-12)
    # at pure noise the posterior mean is the prior mean, whatever x_t
    torch.testing.assert_close(flow(x_t, 1.0), (mixture.weights @ mixture.means).expand(6, 8))
    t = torch.tensor([0.0, 0.5, 1.0, 0.2, 0.9, 1.0], dtype=F64)
    torch.testing.assert_close(flow(x_t, t), mixture(x_t, t), rtol=0, atol=1e-12)
    x = x_t.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(flow(x, t).sum(), x)
    assert torch.isfinite(grad).all()
    cost = priors.Cost()
    with priors.measure(cost, batch=6):
        flow(x_t, 0.5)
    assert cost.nfe == 1 and cost.vjp == 0


def test_a_velocity_network_is_registered_and_bad_fields_are_refused():
    net = torch.nn.Linear(4, 4)
    flow = priors.FlowDenoiser(lambda x, t: net(x), priors.RectifiedSchedule())
    assert not list(flow.parameters())  # a plain callable is not a module
    module_flow = priors.FlowDenoiser(_Field(), priors.RectifiedSchedule())
    assert len(list(module_flow.parameters())) == 2
    with pytest.raises(TypeError, match="velocity must be callable"):
        priors.FlowDenoiser(3.0, priors.RectifiedSchedule())
    with pytest.raises(TypeError, match="schedule"):
        priors.FlowDenoiser(_Field(), "rectified")
    wrong = priors.FlowDenoiser(lambda x, t: x[:, :2], priors.RectifiedSchedule())
    with pytest.raises(ValueError, match=r"x_t's shape \(3, 4\), got \(3, 2\)"):
        wrong(torch.zeros(3, 4), 0.5)
    broken = priors.FlowDenoiser(lambda x, t: x / 0, priors.RectifiedSchedule())
    with pytest.raises(FloatingPointError, match="FlowDenoiser returned NaN or Inf"):
        broken(torch.ones(3, 4), 0.5)


class _Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x_t, t):
        return self.linear(x_t)
