"""PnP-Flow: the authors' loop step for step, its cost, its start-independence, the estimate
it reaches on a Gaussian posterior (measured), and refusals."""

import pytest
import torch

import guided
import operators
import priors

from tests.guided.linear_cases import flow_gaussian, inpainted, matrix_of

F64 = torch.float64
RECTIFIED = priors.RectifiedSchedule()


def test_it_is_the_authors_loop_step_for_step():
    """The authors' Algorithm 1 in their time (tau = 1 is data, X_tau = tau X_1 + (1 - tau) X_0,
    velocity v = X_1 - X_0, denoiser D(x, tau) = x + (1 - tau) v, start A^T 1, learning rate
    sigma_y^2 lr_pnp (1 - tau)^alpha on the gradient of |Ax - y|^2 / (2 sigma_y^2)), written
    out here, against our sampler given the same noise."""
    mixture, flow = flow_gaussian(6)
    op, y = inpainted(mixture)
    sigma_y, lr, alpha, draws, steps = 0.1, 0.8, 0.7, 3, 12

    def velocity(x, tau):  # theirs: minus ours at t = 1 - tau
        return -mixture.velocity(x, torch.tensor(1 - tau, dtype=F64))

    g = torch.Generator().manual_seed(7)
    x = op.vjp(torch.zeros(1, 6, dtype=F64), torch.ones_like(y)).expand(2, 6)  # A^T 1
    for k in range(steps):
        tau = k / steps
        rate = sigma_y**2 * lr * (1 - tau) ** alpha
        z = x - rate * op.vjp(x, op(x) - y) / sigma_y**2
        total = torch.zeros_like(x)
        for _ in range(draws):
            z_tilde = tau * z + (1 - tau) * torch.randn(z.shape, generator=g, dtype=F64)
            total = total + z_tilde + (1 - tau) * velocity(z_tilde, tau)
        x = total / draws
    ours = guided.PnPFlow(op, y, sigma_y, lr=lr, alpha=alpha, draws=draws)(
        flow, torch.zeros(2, 6, dtype=F64), guided.time_grid(steps),
        generator=torch.Generator().manual_seed(7),
    )  # fmt: skip
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-10)


def test_the_start_does_not_matter_and_the_cost_is_draws_per_step():
    mixture, flow = flow_gaussian(6)
    op, y = inpainted(mixture)
    method = guided.PnPFlow(op, y, 0.1, draws=4)
    runs = []
    for start in (torch.zeros(3, 6, dtype=F64), 50 * torch.ones(3, 6, dtype=F64)):
        cost = priors.Cost()
        runs.append(method(flow, start, guided.time_grid(10), cost=cost,
                           generator=torch.Generator().manual_seed(0)))  # fmt: skip
        assert cost.nfe == 40 and cost.vjp == 0
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_the_estimate_moves_most_of_the_way_to_the_gaussian_posterior_mean():
    """Measured (the mean of 4 estimates, lr 1, |A|^2 = 1): on inpainting the prior's mean is
    22.1 posterior standard deviations from the posterior mean, PnP-Flow's 5.1, 3.0 and 0.92 at
    25, 100 and 400 steps (this test's seeds); a point estimate, not the posterior mean."""
    mixture, flow = flow_gaussian(6)
    op, y = inpainted(mixture)
    rows = op.mask.bool()
    exact = mixture.posterior(matrix_of(op, 6)[rows], y[0][rows], 0.1)
    mean, sd = exact.means[0], torch.diagonal(exact.covs[0]).sqrt()
    prior_error = float(((mixture.means[0] - mean) / sd).abs().max())
    x = guided.PnPFlow(op, y, 0.1)(flow, torch.zeros(4, 6, dtype=F64), guided.time_grid(400),
                                   generator=torch.Generator().manual_seed(1))  # fmt: skip
    error = float(((x.mean(0) - mean) / sd).abs().max())
    assert prior_error > 20 and error < 0.1 * prior_error, (prior_error, error)


def test_refusals_name_the_problem():
    mixture, flow = flow_gaussian(6)
    op, y = inpainted(mixture)
    x_T = torch.zeros(2, 6, dtype=F64)
    with pytest.raises(ValueError, match=r"lr \* t\^alpha \* \|A\|\^2 = 2\.0.*take lr below"):
        guided.PnPFlow(op, y, 0.1, lr=2.0)(flow, x_T, guided.time_grid(5))
    diffusion = priors.GaussianMixture(torch.ones(1), mixture.means, mixture.covs,
                                       priors.CosineSchedule())  # fmt: skip
    with pytest.raises(ValueError, match="RectifiedSchedule, got CosineSchedule.*DiffPIR"):
        guided.PnPFlow(op, y, 0.1)(diffusion, x_T, guided.time_grid(5))
    for bad in ({"lr": 0.0}, {"alpha": -1.0}, {"draws": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            guided.PnPFlow(op, y, 0.1, **bad)
    with pytest.raises(operators.NotDifferentiableError, match="PnP-Flow"):
        guided.PnPFlow(operators.Quantization((6,)), y, 0.1)
