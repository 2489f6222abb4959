"""OT-ODE: the PnP-Flow authors' loop step for step on inpainting, the start and the cut grid,
its cost, the estimate it reaches on a Gaussian posterior (measured), refusals."""

import pytest
import torch

import guided
import operators
import priors

from tests.guided.linear_cases import flow_gaussian, inpainted, matrix_of

F64 = torch.float64
RECTIFIED = priors.RectifiedSchedule()


@pytest.mark.parametrize("adaptive", [False, True])
def test_it_is_the_pnp_flow_authors_loop_oninpainted(adaptive):
    """Their ot_ode.py in their time tau (1 - t): start tau_0 A^T y + (1 - tau_0) eps, then
    Euler steps of Delta = 1/N on v + (1 - tau)/tau gamma g, g = vec + (1 - tau) J_v^T vec,
    vec = A^T (r^2 A A^T + sigma_y^2)^{-1} (y - A x1_hat), x1_hat = x + (1 - tau) v, against
    ours given the same noise."""
    mixture, flow = flow_gaussian(6)
    op, y = inpainted(mixture)
    sigma_y, steps, tau0 = 0.1, 20, 0.2
    eps = torch.randn(3, 6, generator=torch.Generator().manual_seed(5), dtype=F64)

    def v_theirs(x, tau):  # data minus noise: minus our velocity at t = 1 - tau
        return -mixture.velocity(x, torch.tensor(1 - tau, dtype=F64))

    x = tau0 * op.adjoint(y) + (1 - tau0) * eps
    for k in range(int(steps * tau0), steps):
        tau = k / steps
        v = v_theirs(x, tau)
        r2 = (1 - tau) ** 2 / ((1 - tau) ** 2 + tau**2)
        x1 = x + (1 - tau) * v
        vec = op.adjoint((y - op(x1)) / (op.mask * r2 + sigma_y**2))
        z = x.clone().requires_grad_(True)
        (jv,) = torch.autograd.grad(v_theirs(z, tau), z, vec)
        g = vec + (1 - tau) * jv
        gamma = (tau / (tau**2 + (1 - tau) ** 2)) ** 0.5 if adaptive else 1.0
        x = x + (v + (1 - tau) / tau * gamma * g) / steps
    cost = priors.Cost()
    ours = guided.OTODE(op, y, sigma_y, start=1 - tau0, adaptive=adaptive)(
        flow, eps, guided.time_grid(steps), cost=cost
    )
    torch.testing.assert_close(ours, x.detach(), rtol=0, atol=1e-9)
    assert cost.nfe == steps * (1 - tau0) and cost.vjp == steps * (1 - tau0)


def test_the_grid_is_cut_at_the_start():
    mixture, _ = flow_gaussian(6)
    op, y = inpainted(mixture)
    method = guided.OTODE(op, y, 0.1, start=0.75)
    ts = method.grid(guided.time_grid(10), RECTIFIED)
    torch.testing.assert_close(ts, torch.tensor([0.75, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
                                                dtype=F64))  # fmt: skip


def test_the_estimates_land_near_the_gaussian_posterior():
    """PiGDM is exact for N(m, I), so the corrected flow is the posterior's probability-flow
    ODE; only the start differs from p(x_t0 | y). Measured (2000 runs): the prior's mean is
    22.1 posterior standard deviations from the exact posterior mean, OT-ODE's 0.022 at 25,
    100 and 400 steps, and the runs spread like the posterior (standard deviations 0.094 to
    0.097 against 0.0995 observed, 0.95 to 0.96 against 1 unobserved, at 100 steps)."""
    mixture, flow = flow_gaussian(6)
    op, y = inpainted(mixture)
    rows = op.mask.bool()
    exact = mixture.posterior(matrix_of(op, 6)[rows], y[0][rows], 0.1)
    mean, sd = exact.means[0], torch.diagonal(exact.covs[0]).sqrt()
    prior_error = float(((mixture.means[0] - mean) / sd).abs().max())
    x_T = guided.initial_noise(RECTIFIED, (2000, 6), torch.Generator().manual_seed(1), dtype=F64)
    x = guided.OTODE(op, y, 0.1)(flow, x_T, guided.time_grid(100))
    error = float(((x.mean(0) - mean) / sd).abs().max())
    assert prior_error > 20 and error < 0.1, (prior_error, error)
    torch.testing.assert_close(x.std(0), sd, rtol=0.1, atol=0)


def test_refusals_name_the_problem():
    mixture, _ = flow_gaussian(6)
    op, y = inpainted(mixture)
    diffusion = priors.GaussianMixture(torch.ones(1), mixture.means, mixture.covs,
                                       priors.CosineSchedule())  # fmt: skip
    with pytest.raises(ValueError, match="RectifiedSchedule, got CosineSchedule.*PiGDM"):
        guided.OTODE(op, y, 0.1)(diffusion, torch.zeros(2, 6, dtype=F64), guided.time_grid(5))
    for bad in ({"start": 1.0}, {"start": 0.0}, {"adaptive": "yes"}):
        with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
            guided.OTODE(op, y, 0.1, **bad)
    blur = operators.BlackBox(lambda x: x, (6,), (6,))
    with pytest.raises(operators.UnsupportedOperator, match="PiGDM"):
        guided.OTODE(blur, y, 0.1)


def test_its_start_biases_the_mean_where_the_back_projection_misses_the_prior_mean():
    """A prior N(m, I) with m ~ N(0, 4 I) and one random measurement: the back-projection
    A^T y puts the unobserved directions at 0, not at m, and the deterministic flow carries that
    start to the end. Measured (1000 runs, 100 steps): the RMS error of the mean is 0.58 from
    t_0 = 0.8 (the default), 0.13 from 0.95 and 0.031 from 0.999, where the start is almost
    pure noise and the corrected flow (exact for this prior) the posterior's."""
    g = torch.Generator().manual_seed(0)
    mean = 2 * torch.randn(8, generator=g, dtype=F64)
    prior = priors.GaussianMixture(torch.ones(1), mean[None], torch.eye(8)[None], RECTIFIED)
    flow = priors.FlowDenoiser(prior.velocity, RECTIFIED, prior.shape)
    op = operators.MatrixOperator(torch.randn(1, 8, generator=g, dtype=F64) / 8**0.5)
    y = op(prior.sample(1, g)) + 0.3 * torch.randn(1, 1, generator=g, dtype=F64)
    exact = prior.posterior(op.matrix, y[0], 0.3).means[0]
    x_T = guided.initial_noise(RECTIFIED, (1000, 8), g, dtype=F64)
    errors = {}
    for start in (0.8, 0.999):
        x = guided.OTODE(op, y, 0.3, start=start)(flow, x_T, guided.time_grid(100))
        errors[start] = float((x.mean(0) - exact).norm() / 8**0.5)
    assert errors[0.999] < 0.06 and errors[0.8] > 4 * errors[0.999], errors
