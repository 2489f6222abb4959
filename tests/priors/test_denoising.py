"""A diffusion prior as a Gaussian denoiser: exact on a Gaussian prior, per-row levels,
and levels that are not noise levels are refused."""

import math

import pytest
import torch

import priors

F64 = torch.float64


def _gaussian(variances, schedule):
    d = len(variances)
    cov = torch.diag(torch.tensor(variances, dtype=F64))
    return priors.GaussianMixture(torch.ones(1), torch.zeros(1, d, dtype=F64), cov[None], schedule)


@pytest.mark.parametrize("schedule", [priors.CosineSchedule(), priors.LinearSchedule()])
def test_denoise_is_the_wiener_filter_for_a_gaussian_prior(schedule):
    """x ~ N(0, diag(v)), y = x + sigma eps: E[x | y] = v / (v + sigma^2) y, for a scalar
    level and for one level per row."""
    v = torch.tensor([0.25, 1.0, 4.0], dtype=F64)
    prior = _gaussian(v.tolist(), schedule)
    y = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(priors.denoise(prior, y, 0.3), v / (v + 0.09) * y)
    sigma = torch.tensor([0.05, 0.2, 0.5, 1.0], dtype=F64)
    exact = v / (v + sigma[:, None] ** 2) * y
    torch.testing.assert_close(priors.denoise(prior, y, sigma), exact)


def test_noise_time_inverts_the_noise_to_signal_ratio():
    schedule = priors.CosineSchedule()
    t = priors.noise_time(schedule, torch.tensor([0.1, 1.0, 3.0]))
    alpha_t, sigma_t = schedule(t)
    torch.testing.assert_close(sigma_t / alpha_t, torch.tensor([0.1, 1.0, 3.0], dtype=F64))


@pytest.mark.parametrize("sigma", [-0.1, math.inf, math.nan])
def test_levels_that_are_not_noise_levels_are_refused(sigma):
    prior = _gaussian([1.0], priors.CosineSchedule())
    with pytest.raises(ValueError, match="sigma must be finite and at least 0"):
        priors.denoise(prior, torch.zeros(2, 1, dtype=F64), sigma)


def test_a_level_of_0_is_the_schedules_cleanest_time():
    """deepinv's samplers call their denoiser at sigma = 0 on their last step."""
    schedule = priors.CosineSchedule()
    assert float(priors.noise_time(schedule, 0.0)) == pytest.approx(0.0, abs=1e-12)
    prior = _gaussian([1.0], schedule)
    y = torch.ones(1, 1, dtype=F64)
    torch.testing.assert_close(priors.denoise(prior, y, 0.0), prior(y * schedule(0.0)[0], 0.0))


def test_one_level_per_row_must_match_the_rows():
    prior = _gaussian([1.0], priors.CosineSchedule())
    with pytest.raises(ValueError, match=r"one per row of y \(2\), got shape \(3,\)"):
        priors.denoise(prior, torch.zeros(2, 1, dtype=F64), torch.ones(3))
