import math

import pytest
import torch

from hypothesis import given, settings
from hypothesis import strategies as st

import priors

from tests.conftest import SCHEDULES

GRID = torch.linspace(0, 1, 2001, dtype=torch.float64)


def test_alpha_decreasing_sigma_increasing(schedule):
    alpha, sigma = schedule(GRID)
    assert alpha.dtype == sigma.dtype == torch.float64
    if isinstance(schedule, priors.EDMSchedule):
        assert torch.equal(alpha, torch.ones_like(alpha))
    else:
        assert (alpha.diff() < 0).all()
    assert (sigma.diff() > 0).all()
    assert (schedule.log_snr(GRID).diff() < 0).all()


def test_endpoints(schedule):
    alpha_0, sigma_0 = schedule(0.0)
    alpha_1, sigma_1 = schedule(1.0)
    assert float(alpha_0) == pytest.approx(1.0, abs=1e-12)
    assert float(sigma_0) <= 0.002 + 1e-12
    # final SNR ~ 0: the signal keeps under 4% of the noise scale (EDM: 1/80)
    assert float(alpha_1 / sigma_1) ** 2 < 1e-3


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_variance_preserving(name):
    alpha, sigma = SCHEDULES[name]()(GRID)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha), rtol=0, atol=1e-12)


def test_linear_reproduces_trained_table():
    schedule = priors.LinearSchedule()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    n = torch.arange(1, 1001, dtype=torch.float64)
    alpha, sigma = schedule(n / 1000)
    torch.testing.assert_close(alpha**2, alphas_cumprod, rtol=1e-12, atol=0)
    torch.testing.assert_close(sigma**2, 1 - alphas_cumprod, rtol=1e-12, atol=1e-15)
    # between nodes log(alpha_bar) is the linear interpolation of its neighbours
    mid_alpha, _ = schedule((n[:-1] + 0.5) / 1000)
    expected = (alphas_cumprod[:-1].log() + alphas_cumprod[1:].log()) / 2
    torch.testing.assert_close(2 * mid_alpha.log(), expected, rtol=1e-12, atol=1e-12)


def test_cosine_matches_nichol_dhariwal_away_from_the_end():
    s = 0.008
    schedule = priors.CosineSchedule(s=s, alpha_min=1e-9)
    t = torch.linspace(0, 0.9, 50, dtype=torch.float64)
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha, _ = schedule(t)
    torch.testing.assert_close(alpha**2, f / f[0], rtol=1e-6, atol=0)


def test_edm_uniform_time_is_karras_sigma_spacing():
    schedule = priors.EDMSchedule()
    _, sigma = schedule(torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(sigma, torch.tensor([0.002, 80.0], dtype=torch.float64))


def test_time_of_inverts_log_snr(schedule):
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    torch.testing.assert_close(schedule.time_of(schedule.log_snr(t)), t, rtol=0, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8), st.sampled_from(sorted(SCHEDULES)))
def test_shapes_follow_t(values, name):
    schedule = SCHEDULES[name]()
    t = torch.tensor(values, dtype=torch.float64)
    alpha, sigma = schedule(t)
    assert alpha.shape == sigma.shape == t.shape
    alpha_0, _ = schedule(values[0])
    assert alpha_0.shape == () and float(alpha_0) == pytest.approx(float(alpha[0]), rel=1e-12)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), [[0.5]]])
def test_bad_times_raise(schedule, bad):
    with pytest.raises(ValueError, match="t must"):
        schedule(torch.tensor(bad, dtype=torch.float64))


@pytest.mark.parametrize(
    "build",
    [
        lambda: priors.LinearSchedule(beta_start=0.0),
        lambda: priors.LinearSchedule(beta_start=0.1, beta_end=0.01),
        lambda: priors.LinearSchedule(steps=0),
        lambda: priors.CosineSchedule(alpha_min=0.0),
        lambda: priors.CosineSchedule(s=-1.0),
        lambda: priors.EDMSchedule(sigma_min=1.0, sigma_max=0.5),
        lambda: priors.EDMSchedule(rho=0.0),
        lambda: priors.DiscreteSchedule(torch.tensor([0.5, 0.9])),
        lambda: priors.DiscreteSchedule(torch.tensor([1.0, 0.5])),
    ],
)
def test_bad_schedule_parameters_raise(build):
    with pytest.raises(ValueError):
        build()


def test_scalar_times_are_remembered_as_copies(schedule):
    t = torch.tensor(0.37, dtype=torch.float64)
    first = schedule(t)
    exact = schedule.alpha_sigma(t)
    for got, want in zip(first, exact, strict=True):
        assert torch.equal(got, want)
    first[0].mul_(0)  # a caller writing into its result must not corrupt later calls
    again = schedule(t)
    assert torch.equal(again[0], exact[0]) and torch.equal(again[1], exact[1])
    grid = schedule(torch.tensor([0.37, 0.5], dtype=torch.float64))
    assert float(grid[0][0]) == float(exact[0]) and float(grid[1][0]) == float(exact[1])


def test_memo_is_bounded_and_skips_differentiable_times():
    schedule = priors.CosineSchedule()
    for i in range(schedule._MEMO_SIZE + 10):
        schedule(i / (schedule._MEMO_SIZE + 10))
    assert len(schedule._memo) <= schedule._MEMO_SIZE
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    alpha, _ = schedule(t)
    (grad,) = torch.autograd.grad(alpha, t)  # the time's gradient still flows
    assert float(grad) < 0
