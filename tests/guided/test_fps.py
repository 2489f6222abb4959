"""FPS-SMC: on a Gaussian prior (exact denoiser) the twisted filter samples close to the exact
posterior along the observed directions, where the authors' weighting over-concentrates; its
cost is its particles; rows are independent; bad input is refused."""

import pytest
import torch

import guided
import operators
import priors

from tests.guided.linear_cases import Dense, measured

F64 = torch.float64


def _observed_errors(out, prior, op, y, sigma_y):
    """Variance ratios and mean errors (in sd) along the observed right-singular directions."""
    exact = prior.posterior(op.matrix, y[0], sigma_y)
    basis = op.Vt(torch.eye(8, dtype=F64))[:, :3]
    cov = basis.T @ exact.covs[0] @ basis
    ratios = (out @ basis).var(0) / cov.diagonal()
    error = ((out - exact.means[0]) @ basis).mean(0).abs() / cov.diagonal().sqrt()
    return ratios, error


def test_the_twisted_filter_is_calibrated_where_the_authors_weights_collapse():
    """sigma_y = 0.3, 100 steps, 16 particles, 600 rows: twisted variance ratios within
    [0.8, 1.35] and mean errors below 0.25 sd (posterior_variance, 32 particles and 2000 rows:
    1.06 to 1.14); the authors' weighting below 0.8 (there: 0.44 to 0.58)."""
    prior, op, y, sigma_y = measured(sigma_y=0.3)
    x_T = guided.initial_noise(
        prior.schedule, (600, 8), torch.Generator().manual_seed(1), dtype=F64
    )
    grid = guided.time_grid(100)
    twisted = guided.FPS(op, y, sigma_y, particles=16)
    out = twisted(prior, x_T, grid, generator=torch.Generator().manual_seed(2))
    ratios, error = _observed_errors(out, prior, op, y, sigma_y)
    assert 0.8 < ratios.min() and ratios.max() < 1.35 and error.max() < 0.25
    authors = guided.FPS(op, y, sigma_y, particles=16, twisted=False)
    out = authors(prior, x_T, grid, generator=torch.Generator().manual_seed(2))
    ratios, _ = _observed_errors(out, prior, op, y, sigma_y)
    assert ratios.max() < 0.8


def test_each_step_costs_one_evaluation_per_particle():
    prior, op, y, sigma_y = measured(sigma_y=0.3)
    x_T = guided.initial_noise(prior.schedule, (3, 8), torch.Generator().manual_seed(3), dtype=F64)
    cost = priors.Cost()
    guided.FPS(op, y, sigma_y, particles=5)(prior, x_T, guided.time_grid(7), cost=cost)
    assert (cost.nfe, cost.vjp) == (7 * 5, 0)


def test_a_row_does_not_depend_on_its_companions():
    prior, op, _, sigma_y = measured(sigma_y=0.3)
    g = torch.Generator().manual_seed(4)
    y = torch.randn(3, 3, generator=g, dtype=F64)
    x_T = guided.initial_noise(prior.schedule, (3, 8), g, dtype=F64)

    def run(rows):
        gens = [torch.Generator().manual_seed(100 + r) for r in rows]
        return guided.FPS(op, y[rows], sigma_y, particles=4)(
            prior, x_T[rows], guided.time_grid(6), generator=gens, check_residual=False
        )

    torch.testing.assert_close(run([1]), run([0, 1, 2])[1:2], rtol=0, atol=1e-12)


def test_bad_input_is_refused():
    _, op, y, sigma_y = measured(sigma_y=0.3)
    for other in (Dense(op.matrix), operators.SaturatingSensor((8,), gain=1.5)):
        with pytest.raises(operators.UnsupportedOperator, match="SVDOperator"):
            guided.FPS(other, torch.zeros(1, *other.out_shape, dtype=F64), 0.1)
    with pytest.raises(ValueError, match="sigma_y"):
        guided.FPS(op, y, 0.0)
    for name, bad in [("particles", 0), ("eta", 0.0), ("eta", 1.5), ("ess", 0.0), ("twisted", 1)]:
        with pytest.raises((ValueError, TypeError), match=name):
            guided.FPS(op, y, sigma_y, **{name: bad})
