import math

import pytest
import torch

import priors

from tests.conftest import well_separated_mixture


def _mixture_1d(schedule=None):
    return priors.GaussianMixture(
        torch.tensor([0.3, 0.7]),
        torch.tensor([[-2.0], [1.5]]),
        torch.tensor([[[0.4]], [[0.9]]]),
        schedule or priors.LinearSchedule(),
    )


@pytest.mark.parametrize("dim", [2, 8])
def test_denoiser_is_tweedie_of_the_exact_marginal(schedule, dim):
    """E[x | x_t] = (x_t + sigma_t^2 grad log p_t(x_t)) / alpha_t, the score by autograd."""
    prior = well_separated_mixture(dim, schedule)
    g = torch.Generator().manual_seed(1)
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95, 1.0], dtype=torch.float64)
    alpha_t, sigma_t = schedule(t)
    x = prior.sample(t.numel(), g)
    x_t = alpha_t[:, None] * x + sigma_t[:, None] * torch.randn(
        x.shape, generator=g, dtype=torch.float64
    )
    x_t.requires_grad_(True)
    (score,) = torch.autograd.grad(prior.log_prob(x_t, t).sum(), x_t)
    signal = alpha_t > 0  # at pure noise (rectified, t = 1) the formula divides by zero
    expected = (x_t + sigma_t[:, None] ** 2 * score)[signal] / alpha_t[signal, None]
    x_hat = prior(x_t, t).detach()
    torch.testing.assert_close(x_hat[signal], expected.detach(), rtol=1e-8, atol=1e-8)
    # where x_t is pure noise, E[x | x_t] is the prior's mean
    mean = (prior.weights @ prior.means).expand_as(x_hat)
    torch.testing.assert_close(x_hat[~signal], mean[~signal], rtol=0, atol=1e-12)


def test_denoiser_at_zero_noise_is_identity():
    prior = well_separated_mixture(2, priors.LinearSchedule())
    x = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(prior(x, 0.0), x)


def test_denoiser_keeps_dtype_and_is_per_sample():
    prior = well_separated_mixture(2, priors.CosineSchedule())
    x = torch.randn(6, 2)
    out = prior(x, torch.full((6,), 0.4))
    assert out.dtype == torch.float32
    torch.testing.assert_close(prior(x[2:3], 0.4), out[2:3])


@pytest.mark.parametrize("dim", [2, 8])
def test_sample_moments(dim):
    prior = well_separated_mixture(dim, priors.LinearSchedule())
    n = 40_000
    x = prior.sample(n, torch.Generator().manual_seed(0))
    w, m, c = prior.weights, prior.means, prior.covs
    mean = w @ m
    centred = m - mean
    cov = (w[:, None, None] * (c + centred[:, :, None] * centred[:, None, :])).sum(0)
    se = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 4 * se).all()
    # each covariance entry within 4 standard errors (Gaussian-free bound from the fourth moment)
    xc = x - x.mean(0)
    products = xc[:, :, None] * xc[:, None, :]
    se_cov = products.std(0) / math.sqrt(n)
    assert ((products.mean(0) - cov).abs() < 4 * se_cov + 1e-12).all()


def test_log_prob_integrates_to_one():
    prior = well_separated_mixture(2, priors.LinearSchedule())
    u = torch.linspace(-9, 9, 601, dtype=torch.float64)
    gx, gy = torch.meshgrid(u, u, indexing="ij")
    p = prior.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).exp()
    assert float(p.sum() * (u[1] - u[0]) ** 2) == pytest.approx(1.0, abs=1e-6)


def test_log_prob_at_time_is_the_convolved_density():
    prior = _mixture_1d(priors.CosineSchedule())
    alpha, sigma = prior.schedule(0.6)
    x = torch.linspace(-4, 4, 9, dtype=torch.float64)[:, None]
    expected = torch.logsumexp(
        prior.weights.log()
        + torch.distributions.Normal(
            alpha * prior.means[:, 0], (alpha**2 * prior.covs[:, 0, 0] + sigma**2).sqrt()
        ).log_prob(x),
        dim=1,
    )
    torch.testing.assert_close(prior.log_prob(x, 0.6), expected)


def _grid_posterior(prior, a, y, sigma_y, grid):
    """Brute-force Bayes on a grid: prior density times likelihood, normalised."""
    log_post = prior.log_prob(grid) + torch.distributions.Normal(grid @ a.T, sigma_y).log_prob(
        y
    ).sum(1)
    return torch.softmax(log_post, 0)


def test_posterior_matches_bayes_1d():
    prior = _mixture_1d()
    a = torch.tensor([[0.8]], dtype=torch.float64)
    y = torch.tensor([0.3], dtype=torch.float64)
    grid = torch.linspace(-8, 8, 20_001, dtype=torch.float64)[:, None]
    brute = _grid_posterior(prior, a, y, 0.5, grid)
    post = prior.posterior(a, y, 0.5)
    exact = torch.softmax(post.log_prob(grid), 0)
    assert float((brute - exact).abs().sum()) < 1e-6  # total variation on the grid
    torch.testing.assert_close(post.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    mean = (brute[:, None] * grid).sum(0)
    torch.testing.assert_close(post.weights @ post.means, mean, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("d_y", [1, 2])
def test_posterior_matches_bayes_2d(d_y):
    prior = well_separated_mixture(2, priors.LinearSchedule())
    g = torch.Generator().manual_seed(3)
    a = torch.randn(d_y, 2, generator=g, dtype=torch.float64)
    x = prior.sample(1, g)[0]
    sigma_y = 0.7
    y = a @ x + sigma_y * torch.randn(d_y, generator=g, dtype=torch.float64)
    u = torch.linspace(-9, 9, 721, dtype=torch.float64)
    gx, gy = torch.meshgrid(u, u, indexing="ij")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    brute = _grid_posterior(prior, a, y, sigma_y, grid)
    post = prior.posterior(a, y, sigma_y)
    exact = torch.softmax(post.log_prob(grid), 0)
    assert float((brute - exact).abs().sum()) < 1e-6
    # component weights: brute-force mass of each component's posterior responsibility
    brute_weights = (brute[:, None] * post.responsibilities(grid)).sum(0)
    torch.testing.assert_close(post.weights, brute_weights, rtol=1e-5, atol=1e-8)


def test_posterior_accepts_a_linear_map_and_rejects_a_nonlinear_one():
    prior = well_separated_mixture(2, priors.LinearSchedule())
    a = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    y = torch.tensor([0.2], dtype=torch.float64)
    by_matrix = prior.posterior(a, y, 0.3)
    by_map = prior.posterior(lambda x: x @ a.T, y, 0.3)
    torch.testing.assert_close(by_map.means, by_matrix.means)
    torch.testing.assert_close(by_map.covs, by_matrix.covs)
    with pytest.raises(ValueError, match="not linear"):
        prior.posterior(lambda x: (x @ a.T) ** 2, y, 0.3)


def test_noiseless_posterior_lies_on_the_constraint():
    prior = well_separated_mixture(2, priors.LinearSchedule())
    a = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([1.0], dtype=torch.float64)
    post = prior.posterior(a, y, 0.0)
    x = post.sample(100, torch.Generator().manual_seed(0))
    # the covariance along a is zero up to rounding (~1e-16); sampling takes its square root
    torch.testing.assert_close(x @ a.T, y.expand(100, 1), rtol=0, atol=1e-7)
    assert float((a @ post.covs @ a.T).abs().max()) < 1e-12


def test_singular_noiseless_posterior_raises():
    prior = priors.GaussianMixture(
        torch.ones(1),
        torch.zeros(1, 2),
        torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]),
        priors.LinearSchedule(),
    )
    with pytest.raises(ValueError, match="singular"):
        prior.posterior(torch.tensor([[0.0, 1.0]]), torch.tensor([0.0]), 0.0)


@pytest.mark.parametrize(
    "weights, means, covs",
    [
        (torch.tensor([-0.1, 1.1]), torch.zeros(2, 2), torch.eye(2).expand(2, 2, 2)),
        (torch.ones(2), torch.zeros(3, 2), torch.eye(2).expand(2, 2, 2)),
        (torch.ones(2), torch.zeros(2, 2), torch.eye(3).expand(2, 3, 3)),
        (torch.ones(2), torch.zeros(2, 2), torch.tensor([[[1.0, 2.0], [0.0, 1.0]]] * 2)),
        (torch.ones(2), torch.zeros(2, 2), -torch.eye(2).expand(2, 2, 2)),
        (
            torch.ones(2),
            torch.tensor([[0.0, float("nan")], [0.0, 0.0]]),
            torch.eye(2).expand(2, 2, 2),
        ),
    ],
)
def test_bad_mixture_parameters_raise(weights, means, covs):
    with pytest.raises(ValueError):
        priors.GaussianMixture(weights, means, covs, priors.LinearSchedule())


def test_bad_calls_raise():
    prior = well_separated_mixture(2, priors.LinearSchedule())
    with pytest.raises(ValueError, match="shape"):
        prior(torch.zeros(3, 4), 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        prior(torch.zeros(3, 2), 1.2)
    with pytest.raises(ValueError, match="one entry per row"):
        prior(torch.zeros(3, 2), torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="y must have shape"):
        prior.posterior(torch.ones(1, 2), torch.ones(2), 0.1)
    with pytest.raises(ValueError, match="sigma_y"):
        prior.posterior(torch.ones(1, 2), torch.ones(1), -1.0)
    with pytest.raises(ValueError, match="matrix must have shape"):
        prior.posterior(torch.ones(1, 3), torch.ones(1), 0.1)


def test_isotropic_and_diagonal_fast_paths_match_the_general_one():
    g = torch.Generator().manual_seed(0)
    k, d = 4, 5
    means = 3 * torch.randn(k, d, generator=g, dtype=torch.float64)
    weights = torch.rand(k, generator=g, dtype=torch.float64)
    scales = 0.5 + torch.rand(k, generator=g, dtype=torch.float64)
    for covs in (
        scales[:, None, None] * torch.eye(d, dtype=torch.float64),
        torch.diag_embed(0.5 + torch.rand(k, d, generator=g, dtype=torch.float64)),
    ):
        fast = priors.GaussianMixture(weights, means, covs, priors.CosineSchedule())
        general = priors.GaussianMixture(weights, means, covs, priors.CosineSchedule())
        general.isotropic = general.diagonal = False
        assert fast.diagonal
        x_t = 2 * torch.randn(6, d, generator=g, dtype=torch.float64)
        for t in (0.0, 0.1, 0.5, 0.99):
            torch.testing.assert_close(fast(x_t, torch.tensor(t)), general(x_t, torch.tensor(t)))
        torch.testing.assert_close(fast.log_prob(x_t, 0.3), general.log_prob(x_t, 0.3))
