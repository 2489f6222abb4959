"""DAPS: its cost is its inner ODE steps; on a Gaussian prior (exact denoiser) it samples close
to the exact posterior, far closer than the prior; it pulls a nonlinear measurement in; rows
are independent; unstable steps and non-differentiable operators are refused."""

import math

import pytest
import torch

import guided
import operators
import priors

from guided.sampler import Run, Step
from guided.time import level_times
from tests.guided.linear_cases import flow_gaussian

F64 = torch.float64


def _problem(d=8, sigma_y=0.1, seed=0, schedule=None):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=F64)
    root = torch.randn(d, d, generator=g, dtype=F64) / d**0.5
    cov = root @ root.T + 0.1 * torch.eye(d, dtype=F64)
    prior = priors.GaussianMixture(
        torch.ones(1, dtype=F64), mean[None], cov[None], schedule or priors.CosineSchedule()
    )
    op = operators.MatrixOperator(torch.randn(3, d, generator=g, dtype=F64))
    y = op(prior.sample(1, g)) + sigma_y * torch.randn(1, 3, generator=g, dtype=F64)
    return prior, op, y, sigma_y


def _grid(prior, steps):
    return guided.time_grid(steps, "karras", schedule=prior.schedule, sigma_min=0.1)


def _near_the_posterior(prior, op, y, sigma_y, denoiser, ts):
    exact = prior.posterior(op.matrix, y[0], sigma_y)
    g = torch.Generator().manual_seed(1)
    x_T = guided.initial_noise(prior.schedule, (2000, 8), g, dtype=F64)
    daps = guided.DAPS(op, y, sigma_y, tau=sigma_y, step_size=1e-3)
    out = daps(denoiser, x_T, ts, generator=g)
    basis = op.Vt(torch.eye(8, dtype=F64))[:, :3]  # the observed right-singular directions
    cov = basis.T @ exact.covs[0] @ basis
    sd = cov.diagonal().sqrt()
    error = ((out - exact.means[0]) @ basis).mean(0).abs() / sd
    ratios = (out @ basis).var(0) / cov.diagonal()
    assert error.max() < 0.2 and 0.8 < ratios.min() and ratios.max() < 2
    assert (((prior.means[0] - exact.means[0]) @ basis).abs() / sd).min() > 10
    coordinates = exact.covs[0].diagonal().sqrt()
    assert ((out.mean(0) - exact.means[0]) / coordinates).abs().max() < 0.4


def test_daps_samples_near_the_exact_gaussian_posterior():
    """Along the observed directions, measured at 50 annealing steps of 5 ODE steps and 100
    Langevin steps (tau = sigma_y): the mean within 0.06 posterior sd of the exact one and the
    variance 1.09 to 1.46 times the exact (over-dispersed), where the prior is 13 to 21 sd
    away and 330 to 1100 times wider; over all coordinates the mean is within 0.23 sd."""
    prior, op, y, sigma_y = _problem()
    _near_the_posterior(prior, op, y, sigma_y, prior, _grid(prior, 50))


def test_daps_from_pure_noise_solves_the_flow_and_samples_near_the_posterior():
    """From pure noise (t = 1 on the rectified schedule) the inner ODE's spacing starts at
    level 100 whatever the step's end: on N(m, I) its clean estimate approaches the
    probability-flow map x_1 -> m + (1 + sigma_min^2)^(1/2) x_1 as the ODE steps grow
    (measured mean error 1.29, 1.13, 0.62, 0.17 at 3, 5, 10, 40 steps, against 2.77 for a
    jump straight to sigma_min); a whole run from t = 1 (then levels 100 to 0.1, as the
    authors' annealing) on the mixture's exact velocity field meets the tolerances of the
    cosine-schedule run above (measured: mean within 0.05 sd, variances 1.09 to 1.45 times
    the exact)."""
    gaussian, flow = flow_gaussian(8)
    schedule = flow.schedule
    x_1 = torch.randn(100, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    solution = gaussian.means[0] + math.sqrt(1 + 0.01**2) * x_1
    one = torch.tensor(1.0, dtype=F64)
    errors = []
    for ode_steps in (3, 5, 10, 40):
        daps = guided.DAPS(operators.MatrixOperator(torch.eye(8, dtype=F64)), x_1[:1], 0.1,
                           ode_steps=ode_steps)  # fmt: skip
        estimates = []
        for s in (0.5, 0.95):  # the step's end does not move the start: max(100, its level)
            s = torch.tensor(s, dtype=F64)
            (alpha_t, sigma_t), (alpha_s, sigma_s) = schedule(one), schedule(s)
            step = Step(0, one, s, float(alpha_t), float(sigma_t), float(alpha_s),
                        float(sigma_s), 10)  # fmt: skip
            estimates.append(daps.clean_estimate(Run(flow, None, {}), x_1, step))
        torch.testing.assert_close(estimates[0], estimates[1], rtol=0, atol=0)
        errors.append(float((estimates[0] - solution).norm(dim=1).mean()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.25, errors
    prior, op, y, sigma_y = _problem(schedule=schedule)
    ts = guided.time_grid(50, "karras", schedule=schedule, sigma_min=0.1, sigma_max=100)
    torch.testing.assert_close(  # t = 1, then levels 100 to 0.1 as the authors' annealing
        ts, torch.cat([one[None], level_times(schedule, 100, 0.1, 48), one.new_zeros(1)])
    )
    flow = priors.FlowDenoiser(prior.velocity, schedule, prior.shape)
    _near_the_posterior(prior, op, y, sigma_y, flow, ts)


def test_each_annealing_step_costs_its_ode_steps():
    prior, op, y, sigma_y = _problem()
    x_T = guided.initial_noise(prior.schedule, (3, 8), torch.Generator().manual_seed(2), dtype=F64)
    cost = priors.Cost()
    daps = guided.DAPS(op, y, sigma_y, tau=sigma_y, step_size=1e-3, ode_steps=3, langevin_steps=5)
    daps(prior, x_T, _grid(prior, 7), generator=torch.Generator().manual_seed(3), cost=cost)
    assert (cost.nfe, cost.vjp) == (7 * 3, 0)  # Langevin uses the operator only


def test_daps_pulls_a_nonlinear_measurement_in():
    """A saturating sensor through its own vector-Jacobian product, a constant Langevin step:
    the output's RMS residual is 0.068 (the truth's 0.055), the unguided prior's 0.78."""
    prior, _, _, _ = _problem()
    sensor = operators.SaturatingSensor((8,), gain=1.5)
    g = torch.Generator().manual_seed(4)
    truth = prior.sample(4, g)
    y = sensor(truth) + 0.05 * torch.randn(4, 8, generator=g, dtype=F64)
    x_T = guided.initial_noise(prior.schedule, (4, 8), g, dtype=F64)
    daps = guided.DAPS(sensor, y, 0.05, tau=0.05, step_size=1e-3, decay=1.0)
    out = daps(prior, x_T, _grid(prior, 30), generator=g)
    residual = (sensor(out) - y).pow(2).mean().sqrt()
    unguided = (sensor(prior.sample(4, g)) - y).pow(2).mean().sqrt()
    assert residual < 0.1 < unguided


def test_a_row_does_not_depend_on_its_companions():
    prior, op, _, sigma_y = _problem()
    g = torch.Generator().manual_seed(5)
    y = torch.randn(3, 3, generator=g, dtype=F64)
    x_T = guided.initial_noise(prior.schedule, (3, 8), g, dtype=F64)
    daps = guided.DAPS(op, y, sigma_y, tau=sigma_y, step_size=1e-3, langevin_steps=10)

    def run(rows):
        gens = [torch.Generator().manual_seed(100 + r) for r in rows]
        return guided.DAPS(op, y[rows], sigma_y, tau=sigma_y, step_size=1e-3, langevin_steps=10)(
            prior, x_T[rows], _grid(prior, 5), generator=gens
        )

    assert daps.langevin_steps == 10
    torch.testing.assert_close(run([1]), run([0, 1, 2])[1:2], rtol=0, atol=1e-12)


def test_unstable_steps_and_bad_input_are_refused():
    prior, op, y, sigma_y = _problem()
    x_T = torch.zeros(2, 8, dtype=F64)
    # the authors' image settings on a matrix of norm 3.17: |A|^2 / tau^2 makes them unstable
    authors = guided.DAPS(op, y, sigma_y, tau=0.01 / math.sqrt(2), step_size=5e-5)
    with pytest.raises(ValueError, match="unstable.*step_size"):
        authors(prior, x_T, _grid(prior, 5))
    # a grid down to tiny noise levels: the prior term alone is unstable at the end
    with pytest.raises(ValueError, match="unstable"):
        guided.DAPS(op, y, sigma_y, tau=1.0, step_size=1e-3, decay=1.0, langevin_steps=1)(
            prior, x_T, guided.time_grid(200)
        )
    quantized = operators.Quantization((8,), levels=8)
    with pytest.raises(operators.NotDifferentiableError, match="derivative-free"):
        guided.DAPS(quantized, torch.zeros(1, 8), 0.1)
    for name, bad in [
        ("tau", 0.0),
        ("tau", float("inf")),
        ("ode_steps", 0),
        ("langevin_steps", -1),
        ("step_size", float("nan")),
        ("decay", 1.5),
        ("sigma_min", 0.0),
    ]:
        with pytest.raises((ValueError, TypeError), match=name):
            guided.DAPS(op, y, sigma_y, **{name: bad})
