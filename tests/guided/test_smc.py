"""Particle samplers: MCGdiff and TDS target the exact posterior (its weights fix what the proposal
alone gets wrong), honours noiseless measurements, runs rows independently, counts N
network evaluations per step, and refuses operators without an SVD."""

import pytest
import torch

import guided
import operators
import priors

F64 = torch.float64


def _two_modes():
    """A 2-D mixture whose posterior under one noisy projection flips the mode weights."""
    means = torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=F64)
    prior = priors.GaussianMixture(
        torch.tensor([0.8, 0.2], dtype=F64),
        means,
        torch.eye(2, dtype=F64).expand(2, 2, 2),
        priors.LinearSchedule(),
    )
    op = operators.MatrixOperator(torch.tensor([[0.6, 0.8]], dtype=F64))
    y = torch.tensor([[0.9]], dtype=F64)
    return prior, op, y, 0.5


def _right_mode_fraction(particles, rows, seed, method=guided.MCGdiff, steps=50):
    prior, op, y, sigma_y = _two_modes()
    g = torch.Generator().manual_seed(seed)
    x_T = guided.initial_noise(prior.schedule, (rows, 2), g, dtype=F64)
    sampler = method(op, y, sigma_y, particles=particles)
    out = sampler(prior, x_T, guided.time_grid(steps), generator=g)
    return float((out[:, 0] > 0).double().mean())


def test_weights_recover_the_posterior_mode_weights():
    prior, op, y, sigma_y = _two_modes()
    exact = float(prior.posterior(op.matrix, y[0], sigma_y).weights[1])  # 0.77
    many = _right_mode_fraction(particles=256, rows=200, seed=0)
    one = _right_mode_fraction(particles=1, rows=400, seed=1)  # the proposal alone
    assert abs(many - exact) < 0.1, (many, exact)
    assert abs(one - exact) > 0.3, (one, exact)  # so the check above can fail


def test_tds_weights_correct_its_twisted_proposal():
    prior, op, y, sigma_y = _two_modes()
    exact = float(prior.posterior(op.matrix, y[0], sigma_y).weights[1])
    many = _right_mode_fraction(32, 400, 5, guided.TDS, steps=100)
    one = _right_mode_fraction(1, 400, 6, guided.TDS, steps=100)  # the twisted proposal alone
    assert abs(many - exact) < 0.05, (many, exact)
    assert one - exact > 0.06, (one, exact)


def test_tds_cost_and_errors():
    prior, op, y, sigma_y = _two_modes()
    cost = priors.Cost()
    x_T = torch.zeros(2, 2, dtype=F64)
    guided.TDS(op, y, sigma_y, particles=3)(prior, x_T, guided.time_grid(5), cost=cost)
    assert cost.nfe == 15 and cost.vjp == 15
    with pytest.raises(ValueError, match="sigma_y > 0.*MCGdiff"):
        guided.TDS(op, y, 0.0)
    jpeg = operators.JPEG((1, 8, 8), quality=50)
    with pytest.raises(TypeError, match="not differentiable"):
        guided.TDS(jpeg, torch.zeros(1, 1, 8, 8), 0.1)


def test_gaussian_posterior_mean_and_variance():
    g = torch.Generator().manual_seed(2)
    d = 3
    mean = torch.randn(d, generator=g, dtype=F64)
    prior = priors.GaussianMixture(
        torch.ones(1, dtype=F64),
        mean[None],
        torch.eye(d, dtype=F64)[None],
        priors.LinearSchedule(),
    )
    a = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.8, -0.4]], dtype=F64)
    op, sigma_y = operators.MatrixOperator(a), 0.5
    y = prior.sample(1, g) @ a.T + sigma_y * torch.randn(1, 2, generator=g, dtype=F64)
    post = prior.posterior(a, y[0], sigma_y)
    rows = 1500
    x_T = guided.initial_noise(prior.schedule, (rows, d), g, dtype=F64)
    out = guided.MCGdiff(op, y, sigma_y, particles=8)(
        prior, x_T, guided.time_grid(200), generator=g
    )
    cov = post.covs[0]
    se = (cov.diagonal() / rows).sqrt()
    assert ((out.mean(0) - post.means[0]).abs() < 4 * se + 0.02).all()
    ratio = out.T.cov().diagonal() / cov.diagonal()
    assert ((ratio > 0.85) & (ratio < 1.15)).all(), ratio


def _correlated_gaussian(sigma_y, d=8, d_y=3, seed=0):
    """A Gaussian prior with correlations, a random (d_y, d) matrix, a noisy measurement."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=F64)
    low = 0.3 * torch.randn(d, d, generator=g, dtype=F64)
    prior = priors.GaussianMixture(
        torch.ones(1, dtype=F64), mean[None], (torch.eye(d, dtype=F64) + low @ low.T)[None],
        priors.LinearSchedule(),
    )  # fmt: skip
    a = torch.randn(d_y, d, generator=g, dtype=F64)
    y = prior.sample(1, g) @ a.T + sigma_y * torch.randn(1, d_y, generator=g, dtype=F64)
    return prior, operators.MatrixOperator(a), y


# sigma_y 0.01 (4 s) runs with the slow checks: the default suite stays under 10 minutes
@pytest.mark.parametrize("sigma_y", [pytest.param(0.01, marks=pytest.mark.slow), 0.3])
def test_mcgdiff_is_calibrated_along_the_observed_directions_at_100_steps(sigma_y):
    """Informative measurements: the chain below the pins needs steps (half the grid goes
    there), and the pins' variance must be small next to rho^2 (it was 1e-4 absolute, which
    made the sigma_y = 0.01 posterior 17-41 times too wide)."""
    prior, op, y = _correlated_gaussian(sigma_y)
    g = torch.Generator().manual_seed(1)
    x_T = guided.initial_noise(prior.schedule, (2000, 8), g, dtype=F64)
    out = guided.MCGdiff(op, y, sigma_y, particles=32)(
        prior, x_T, guided.time_grid(100), generator=g
    )
    exact = prior.posterior(op.matrix, y[0], sigma_y)
    basis = op.Vt(torch.eye(8, dtype=F64))[:, :3]  # the observed right-singular directions
    cov = basis.T @ exact.covs[0] @ basis
    ratio = (out @ basis).var(0) / cov.diagonal()
    assert bool(((ratio > 0.75) & (ratio < 1.25)).all()), ratio
    error = ((out @ basis).mean(0) - exact.means[0] @ basis) / cov.diagonal().sqrt()
    assert float(error.abs().max()) < 0.2


def test_mcgdiff_grid_puts_half_its_steps_below_the_largest_pin():
    prior, op, y = _correlated_gaussian(0.3)
    sampler = guided.MCGdiff(op, y, 0.3)
    taus = sampler.taus(prior.schedule)
    ts = sampler.adapt(guided.time_grid(100), prior.schedule)
    assert ts.numel() == 101 and bool((ts.diff() < 0).all()) and float(ts[0]) == 1.0
    assert int((ts < float(taus.max()) - 1e-12).sum()) == 50  # 50 steps end below it
    for tau in taus.tolist():
        assert float((ts - tau).abs().min()) < 1e-12  # every pin is a grid point
    pins_only = guided.MCGdiff(op, y, 0.3, below=None).adapt(guided.time_grid(100), prior.schedule)
    assert int((pins_only < float(taus.max()) - 1e-12).sum()) == round(100 * float(taus.max()))
    kept = guided.MCGdiff(op, y, 0.3, adapt_grid=False)
    ts = guided.time_grid(10)
    seen = []
    kept(prior, torch.zeros(1, 8, dtype=F64), ts, callback=lambda i, s, x: seen.append(float(s)))
    assert seen == ts[1:].tolist()
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="below"):
            guided.MCGdiff(op, y, 0.3, below=bad)


def test_noiseless_measurements_are_met():
    g = torch.Generator().manual_seed(3)
    mask = torch.tensor([1.0, 0, 1, 0, 0, 1], dtype=F64)
    op = operators.Inpainting(mask)
    prior = priors.GaussianMixture(
        torch.tensor([0.5, 0.5], dtype=F64),
        torch.randn(2, 6, generator=g, dtype=F64) * 2,
        torch.eye(6, dtype=F64).expand(2, 6, 6),
        priors.LinearSchedule(),
    )
    y = op(prior.sample(1, g))
    x_T = guided.initial_noise(prior.schedule, (20, 6), g, dtype=F64)
    out = guided.MCGdiff(op, y, 0.0, particles=16)(prior, x_T, guided.time_grid(50), generator=g)
    assert (op(out) - y).abs().max() < 0.05


def test_rows_are_independent_and_cost_counts_particles():
    prior, op, y, sigma_y = _two_modes()
    sampler = guided.MCGdiff(op, y, sigma_y, particles=4)
    x_T = guided.initial_noise(prior.schedule, (3, 2), torch.Generator().manual_seed(4), dtype=F64)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    cost = priors.Cost()
    together = sampler(prior, x_T, guided.time_grid(10), generator=gens, cost=cost)
    alone = sampler(
        prior, x_T[1:2], guided.time_grid(10), generator=[torch.Generator().manual_seed(11)]
    )
    torch.testing.assert_close(together[1:2], alone)
    assert cost.nfe == 4 * 10 and cost.vjp == 0


def _tds_observed_moments(twist, sigma_y=0.3, rows=400, particles=4):
    """TDS on :func:`_correlated_gaussian`: the sample variance along each observed direction
    over the exact posterior's, and the largest mean error in posterior standard deviations."""
    prior, op, y = _correlated_gaussian(sigma_y)
    post, a = prior.posterior(op.matrix, y[0], sigma_y), op.matrix
    g = torch.Generator().manual_seed(3)
    x_T = guided.initial_noise(prior.schedule, (rows, 8), g, dtype=F64)
    sampler = guided.TDS(op, y, sigma_y, particles=particles, twist=twist, iterations=None)
    out = sampler(prior, x_T, guided.time_grid(100), generator=g)
    ratio = (out @ a.T).T.cov().diagonal() / (a @ post.covs[0] @ a.T).diagonal()
    error = ((out.mean(0) - post.means[0]).abs() / post.covs[0].diagonal().sqrt()).max()
    return ratio, float(error)


def test_tds_tweedie_twist_matches_a_gaussian_posterior_where_the_isotropic_one_does_not():
    ratio, error = _tds_observed_moments("tweedie")  # dim y = 3 CG iterations: exact here
    assert ((ratio > 0.75) & (ratio < 1.25)).all() and error < 0.15, (ratio, error)
    ratio, error = _tds_observed_moments("isotropic")  # the same particles: half the variance
    assert (ratio < 0.6).all() and error > 0.15, (ratio, error)


def test_tds_tweedie_twist_cost_and_refusals():
    prior, op, y, sigma_y = _two_modes()
    cost = priors.Cost()
    x_T = torch.zeros(2, 2, dtype=F64)
    sampler = guided.TDS(op, y, sigma_y, particles=3, twist="tweedie", iterations=2)
    sampler(prior, x_T, guided.time_grid(5), cost=cost)
    assert cost.nfe == 15 and cost.vjp == 15 * 3  # per particle and step: 1 NFE, 2 + 1 VJPs
    assert guided.TDS(op, y, sigma_y, twist="tweedie", iterations=None).iterations == 1  # dim y
    with pytest.raises(ValueError, match="twist must be one of"):
        guided.TDS(op, y, sigma_y, twist="full")
    with pytest.raises(ValueError, match="iterations"):
        guided.TDS(op, y, sigma_y, twist="tweedie", iterations=0)
    image = operators.Inpainting(torch.ones(1, 9, 9))  # 81 measurements
    with pytest.raises(ValueError, match="iterations=None takes dim y = 81.*give an integer"):
        guided.TDS(image, torch.zeros(1, 1, 9, 9), 0.1, twist="tweedie", iterations=None)
    nonlinear = operators.NonlinearBlur(operators.gaussian_kernel(1.0, size=3), (1, 8, 8))
    with pytest.raises(TypeError, match="LinearOperator.*isotropic"):
        guided.TDS(nonlinear, torch.zeros(1, 1, 8, 8), 0.1, twist="tweedie")


def test_grid_is_moved_onto_the_matching_times():
    prior, op, y, sigma_y = _two_modes()
    sampler = guided.MCGdiff(op, y, sigma_y)
    (tau,) = sampler.taus(prior.schedule).tolist()
    alpha, sigma = prior.schedule(tau)
    assert float(sigma / alpha) == pytest.approx(sigma_y / 1.0, rel=1e-9)
    ts = sampler.adapt(guided.time_grid(20), prior.schedule)
    assert ts.numel() == 21 and bool((ts.diff() < 0).all())
    assert (ts - tau).abs().min() < 1e-12


def test_errors_name_the_problem():
    prior, op, y, sigma_y = _two_modes()
    dense = operators.Blur(operators.gaussian_kernel(1.0, size=3), (1, 8, 8))
    with pytest.raises(TypeError, match="SVDOperator.*DPS"):
        guided.MCGdiff(dense, torch.zeros(1, 1, 8, 8), 0.1)
    with pytest.raises(ValueError, match="eta"):
        guided.MCGdiff(op, y, sigma_y, eta=0.0)
    with pytest.raises(ValueError, match="particles"):
        guided.MCGdiff(op, y, sigma_y, particles=0)
    with pytest.raises(ValueError, match="rows"):
        x_T = torch.zeros(3, 2, dtype=F64)
        guided.MCGdiff(op, y.expand(2, 1), sigma_y)(prior, x_T, guided.time_grid(5))
