"""MMPS and TMPD: the Tweedie covariance in the likelihood. MMPS is the exact posterior mean
for any Gaussian prior once its conjugate gradients converge; TMPD's row sums are exact where
the observed pixels are independent under the prior and only there; both count every
vector-Jacobian product; rows are independent; bad input is refused."""

import math

import pytest
import torch

import guided
import operators
import priors

from tests.guided.linear_cases import CASES, Flat, gaussian, matrix_of

F64 = torch.float64


def _problem(name, sigma_y, prior, seed=2):
    """A measurement of a prior sample and the exact posterior's denoiser."""
    op, d = CASES[name]
    g = torch.Generator().manual_seed(seed)
    a = matrix_of(op, d)
    y = prior.sample(1, g) @ a.T + sigma_y * torch.randn(1, a.shape[0], generator=g, dtype=F64)
    rows = slice(None)
    if isinstance(op, operators.Inpainting):  # unobserved entries are zero: drop them
        y = y * op.mask
        rows = op.mask.bool()
    exact = prior.posterior(a[rows], y[0][rows], sigma_y)
    image_prior = prior if op.in_shape == (d,) else Flat(prior, op.in_shape)
    return op, d, y.view(1, *op.out_shape), exact, image_prior


def _compare(term, exact, image_prior, op, d, seed=3):
    """The largest difference between the guided denoiser and the exact posterior mean."""
    denoiser = guided.GuidedDenoiser(image_prior, term)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for t in (0.05, 0.4, 0.9):
        x_t = torch.randn(4, d, generator=g, dtype=F64)
        got = denoiser(x_t.view(4, *op.in_shape), torch.tensor(t)).reshape(4, d)
        worst = max(worst, float((got - exact(x_t, torch.tensor(t))).abs().max()))
    return worst


@pytest.mark.parametrize("sigma_y", [0.2, 0.0])
@pytest.mark.parametrize("name", sorted(CASES))
def test_mmps_is_the_exact_posterior_mean_for_any_gaussian_prior(name, sigma_y):
    """A dense prior covariance, where PiGDM's isotropic r_t^2 is wrong: MMPS's conjugate
    gradients on the Tweedie covariance (one VJP each) give E[x | x_t, y] exactly."""
    prior = gaussian(CASES[name][1])
    op, d, y, exact, image_prior = _problem(name, sigma_y, prior)
    iterations = 2 * math.prod(op.out_shape)  # CG converges in dim y steps, in exact arithmetic
    worst = _compare(guided.MMPS(op, y, sigma_y, iterations=iterations), exact, image_prior, op, d)
    assert worst < 1e-7
    pigdm = _compare(guided.PiGDM(op, y, sigma_y, iterations=200), exact, image_prior, op, d)
    assert pigdm > 0.1  # the isotropic approximation is not exact here: the test can tell


def test_mmps_with_few_iterations_is_an_approximation_that_improves_with_more():
    prior = gaussian(16, seed=4)
    op, d, y, exact, image_prior = _problem("circular_blur", 0.05, prior)
    errors = [
        _compare(guided.MMPS(op, y, 0.05, iterations=k), exact, image_prior, op, d)
        for k in (1, 3, 40)
    ]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-7 < errors[0]


@pytest.mark.parametrize("sigma_y", [0.2, 0.0])
def test_tmpd_is_exact_where_the_observed_pixels_are_independent(sigma_y):
    """Diagonal prior covariance through a mask: A J A^T is diagonal and its row sums are its
    diagonal, so TMPD is E[x | x_t, y] (no pull on the unobserved pixels, even at sigma_y 0)."""
    prior = gaussian(6, seed=5, correlated=False)
    op, d, y, exact, image_prior = _problem("inpainting", sigma_y, prior)
    assert _compare(guided.TMPD(op, y, sigma_y), exact, image_prior, op, d) < 1e-10


@pytest.mark.parametrize("name", ["inpainting", "matrix"])
def test_tmpd_is_not_exact_where_observed_pixels_are_correlated(name):
    """Its row sums stand in for a dense A J A^T: measured against MMPS (exact) on the same
    problem, TMPD errs by a clear margin, so the two are different methods."""
    prior = gaussian(6, seed=6)
    op, d, y, exact, image_prior = _problem(name, 0.1, prior)
    tmpd = _compare(guided.TMPD(op, y, 0.1), exact, image_prior, op, d)
    mmps = _compare(guided.MMPS(op, y, 0.1, iterations=12), exact, image_prior, op, d)
    assert mmps < 1e-7 and tmpd > 0.1


def test_mmps_and_tmpd_sampling_match_the_exact_posterior():
    """DDPM with the MMPS term samples the exact posterior of a dense Gaussian prior (its
    denoiser is the exact posterior mean, so the only error is the sampler's)."""
    prior = gaussian(6, seed=7)
    op, d, y, exact, _ = _problem("matrix", 0.3, prior, seed=8)
    g = torch.Generator().manual_seed(9)
    x_T = guided.initial_noise(prior.schedule, (4000, d), g, dtype=F64)
    denoiser = guided.GuidedDenoiser(prior, guided.MMPS(op, y, 0.3, iterations=6))
    samples = guided.DDPM()(denoiser, x_T, guided.time_grid(100), generator=g)
    reference = exact.sample(4000, g)
    torch.testing.assert_close(samples.mean(0), reference.mean(0), rtol=0, atol=0.08)
    torch.testing.assert_close(torch.cov(samples.T), torch.cov(reference.T), rtol=0, atol=0.08)


@pytest.mark.parametrize(("term", "vjps"), [("mmps", 4), ("tmpd", 2)])
def test_every_vector_jacobian_product_is_counted(term, vjps):
    """MMPS: one per CG iteration and the final one; TMPD: the row sums and the final one."""
    prior = gaussian(6)
    op, d, y, _, _ = _problem("matrix", 0.1, prior)
    made = guided.MMPS(op, y, 0.1, iterations=3) if term == "mmps" else guided.TMPD(op, y, 0.1)
    cost = priors.Cost()
    x_t = torch.randn(5, d, generator=torch.Generator().manual_seed(10), dtype=F64)
    with priors.measure(cost, batch=5):
        guided.GuidedDenoiser(prior, made)(x_t, torch.tensor(0.5))
    assert (cost.nfe, cost.vjp) == (1, vjps)


@pytest.mark.parametrize("term", ["mmps", "tmpd"])
def test_a_row_does_not_depend_on_its_companions(term):
    prior = gaussian(6)
    op, d, _, _, _ = _problem("matrix", 0.1, prior)
    g = torch.Generator().manual_seed(11)
    y = torch.randn(2, 3, generator=g, dtype=F64)
    made = guided.MMPS(op, y, 0.1) if term == "mmps" else guided.TMPD(op, y, 0.1)
    denoiser = guided.GuidedDenoiser(prior, made)
    x_t, t = torch.randn(2, d, generator=g, dtype=F64), torch.tensor(0.3)
    first = denoiser(x_t, t)
    x_t[1] *= 10
    torch.testing.assert_close(denoiser(x_t, t)[0], first[0], rtol=0, atol=0)


def test_errors_name_the_problem():
    op, _ = CASES["matrix"]
    y = torch.zeros(1, 3, dtype=F64)
    nonlinear = operators.SaturatingSensor((6,))
    for make in (guided.MMPS, guided.TMPD):
        with pytest.raises(operators.UnsupportedOperator, match="LinearOperator.*DPS"):
            make(nonlinear, torch.zeros(1, 6, dtype=F64), 0.1)
        with pytest.raises(ValueError, match="sigma_y"):
            make(op, y, -1.0)
        with pytest.raises(ValueError, match="sigma_y"):
            make(op, y, float("inf"))
        with pytest.raises((ValueError, TypeError), match="y"):
            make(op, torch.zeros(1, 4, dtype=F64), 0.1)
    with pytest.raises((ValueError, TypeError), match="iterations"):
        guided.MMPS(op, y, 0.1, iterations=0)
    with pytest.raises((ValueError, TypeError), match="iterations"):
        guided.MMPS(op, y, 0.1, iterations=2.5)
