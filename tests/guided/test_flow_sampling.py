"""Samplers and guidance on a flow-matching prior: DDIM is Euler on the velocity ODE, FlowHeun
is second order, every posterior method gives the same samples on the rectified schedule as on
the DDPM one at the same noise levels, steps from pure noise (alpha = 0) are exact or refused."""

import itertools

import pytest
import torch

import guided
import operators
import priors

from evaluation.problems import well_separated_mixture
from evaluation.reference import probability_flow
from tests.guided.linear_cases import CASES, flow_gaussian

F64 = torch.float64
RECTIFIED = priors.RectifiedSchedule()


def _flow_mixture(dim=8, seed=0):
    mixture = well_separated_mixture(dim, RECTIFIED, seed)
    return mixture, priors.FlowDenoiser(mixture.velocity, RECTIFIED, mixture.shape)


def test_ddim_is_euler_on_the_velocity_ode_from_pure_noise():
    mixture, flow = _flow_mixture()
    x_T = torch.randn(64, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    ts = guided.time_grid(12, "shifted")
    x = x_T.clone()
    for t, s in itertools.pairwise(ts):
        x = x + (s - t) * mixture.velocity(x, t)
    torch.testing.assert_close(guided.DDIM()(flow, x_T, ts), x, rtol=0, atol=1e-12)


def test_flow_heun_is_second_order_and_ddim_first_order_on_the_velocity_ode():
    mixture, flow = _flow_mixture()
    x_T = torch.randn(200, 8, generator=torch.Generator().manual_seed(1), dtype=F64)
    reference = probability_flow(mixture, x_T)

    def error(sampler, steps):
        x = sampler(flow, x_T, guided.time_grid(steps))
        return float((x - reference).norm(dim=1).mean())

    heun = [error(guided.FlowHeun(), n) for n in (20, 40, 80)]
    euler = [error(guided.DDIM(), n) for n in (20, 40, 80)]
    # measured: 1.1e-2, 2.8e-3, 7.2e-4 (ratios 3.9) and 0.23, 0.13, 0.067 (ratios 1.7-2.0)
    assert heun[1] < heun[0] / 3.2 and heun[2] < heun[1] / 3.2, heun
    assert 1.5 < euler[0] / euler[1] < 2.5 and 1.5 < euler[1] / euler[2] < 2.5, euler
    assert heun[2] < 0.02 * euler[2]
    cost = priors.Cost()
    guided.FlowHeun()(flow, x_T[:3], guided.time_grid(10), cost=cost)
    assert cost.nfe == 2 * 10 - 1  # the last step, to sigma = 0, is an Euler step


def _problem(seed=0, sigma_y=0.2):
    g = torch.Generator().manual_seed(seed)
    linear = well_separated_mixture(8, priors.LinearSchedule())
    a = torch.randn(3, 8, generator=g, dtype=F64)
    op = operators.MatrixOperator(a)
    y = op(linear.sample(1, g)) + sigma_y * torch.randn(1, 3, generator=g, dtype=F64)
    return linear, op, y


METHODS = {
    "DDPM": lambda op, y: (guided.DDPM(), ()),
    "DPMSolver": lambda op, y: (guided.DPMSolver(), ()),
    "DPS": lambda op, y: (guided.DDPM(), (guided.DPS(op, y, 0.2, zeta=0.1),)),
    "PiGDM": lambda op, y: (guided.DDPM(), (guided.PiGDM(op, y, 0.2),)),
    "DDRM": lambda op, y: (guided.DDRM(op, y, 0.2), ()),
    "TDS": lambda op, y: (guided.TDS(op, y, 0.2, particles=4), ()),
    "TDS (tweedie twist)": lambda op, y: (
        guided.TDS(op, y, 0.2, particles=4, twist="tweedie"),
        (),
    ),
    "MCGdiff": lambda op, y: (guided.MCGdiff(op, y, 0.2, particles=4, adapt_grid=False), ()),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_posterior_method_is_the_same_on_the_flow_prior_at_the_same_noise_levels(name):
    """The linear-beta grid takes the same noise levels sigma/alpha on both schedules; every
    update is written in them, so from the same noise the flow prior (the mixture's velocity
    field) gives the DDPM prior's samples scaled by alpha, to rounding: the methods keep their
    accuracy on flow priors. (MCGdiff's grid adaptation warps the grid in t, so it runs
    unadapted here.)"""
    linear, op, y = _problem()
    _, flow = _flow_mixture()
    eps = torch.randn(64, 8, generator=torch.Generator().manual_seed(3), dtype=F64)
    samples = []
    for prior in (linear, flow):
        ts = guided.time_grid(50, "linear_beta", schedule=prior.schedule)
        x_T = float(prior.schedule(ts[0])[1]) * eps  # initial_noise's draw, the same on both
        sampler, terms = METHODS[name](op, y)
        denoiser = guided.GuidedDenoiser(prior, *terms) if terms else prior
        run = sampler(denoiser, x_T, ts, generator=torch.Generator().manual_seed(5),
                      check_residual=False)  # fmt: skip
        samples.append(run)
    assert torch.isfinite(samples[0]).all()
    torch.testing.assert_close(samples[1], samples[0], rtol=0, atol=1e-9)


def test_guidance_at_pure_noise_leaves_the_prior_mean_and_costs_no_vjp():
    _, op, y = _problem()
    _, flow = _flow_mixture()
    x_t = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    terms = (guided.PiGDM(op, y, 0.2), guided.MMPS(op, y, 0.2), guided.TMPD(op, y, 0.2))
    for term in (*terms, guided.DPS(op, y, 0.2)):
        guided_flow = guided.GuidedDenoiser(flow, term)
        cost = priors.Cost()
        with priors.measure(cost, batch=5):
            got = guided_flow(x_t, 1.0)
        torch.testing.assert_close(got, flow(x_t, 1.0), rtol=0, atol=0)
        assert cost.nfe == 1 and cost.vjp == 0
        # per-row times: the pure-noise rows take the prior's mean, the others are guided
        t = torch.tensor([1.0, 0.5, 1.0, 0.3, 0.7], dtype=F64)
        rows = guided_flow(x_t, t)
        torch.testing.assert_close(rows[[0, 2]], flow(x_t, t)[[0, 2]], rtol=0, atol=0)
        for i in (1, 3, 4):
            torch.testing.assert_close(rows[i], guided_flow(x_t[i : i + 1], t[i])[0])


def test_pigdm_from_pure_noise_samples_the_exact_gaussian_posterior():
    """A Gaussian prior N(m, I) through its velocity field on the rectified schedule, PiGDM
    (exact guidance for it) with ancestral steps from t = 1: the samples' mean and covariance
    match the exact posterior's (the cosine-schedule test's tolerances; over 20000 samples the
    largest covariance error measured 0.044 here against 0.040 on the cosine schedule)."""
    op, d = CASES["matrix"]
    gaussian, flow = flow_gaussian(d)
    g = torch.Generator().manual_seed(4)
    y = op(gaussian.sample(1, g)) + 0.3 * torch.randn(1, 3, generator=g, dtype=F64)
    exact = gaussian.posterior(op.matrix, y[0], 0.3)
    x_T = guided.initial_noise(RECTIFIED, (4000, d), g, dtype=F64)
    ts = guided.time_grid(100)
    samples = guided.DDPM()(
        guided.GuidedDenoiser(flow, guided.PiGDM(op, y, 0.3)), x_T, ts, generator=g
    )
    reference = exact.sample(4000, g)
    torch.testing.assert_close(samples.mean(0), reference.mean(0), rtol=0, atol=0.08)
    torch.testing.assert_close(torch.cov(samples.T), torch.cov(reference.T), rtol=0, atol=0.1)


@pytest.mark.parametrize(
    "build",
    [
        lambda op, y: guided.Heun(),
    ],
    ids=["Heun"],
)
def test_samplers_that_divide_by_alpha_refuse_pure_noise_and_run_below_it(build):
    _, op, y = _problem()
    _, flow = _flow_mixture()
    sampler = build(op, y)
    x_T = guided.initial_noise(RECTIFIED, (4, 8), torch.Generator().manual_seed(0), dtype=F64)
    ts = guided.time_grid(5)
    name = type(sampler).__name__
    with pytest.raises(
        ValueError,
        match=rf"{name} divides by alpha_t, which is 0 at t = 1 on "
        r"RectifiedSchedule.*0\.999 \* guided\.time_grid.*guided\.FlowHeun",
    ):
        sampler(flow, x_T, ts, generator=torch.Generator().manual_seed(1))
    x_T = guided.initial_noise(RECTIFIED, (4, 8), torch.Generator().manual_seed(0), t=0.999,
                               dtype=F64)  # fmt: skip
    x = sampler(flow, x_T, 0.999 * ts, generator=torch.Generator().manual_seed(1),
                check_residual=False)  # fmt: skip
    assert torch.isfinite(x).all()


def test_the_refusal_names_every_public_sampler_that_steps_from_pure_noise():
    _, flow = _flow_mixture()
    x_T = guided.initial_noise(RECTIFIED, (2, 8), torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(ValueError, match="steps from pure noise") as refusal:
        guided.Heun()(flow, x_T, guided.time_grid(3))
    named = set(str(refusal.value).split("pure noise (")[-1].rstrip(")").split(", "))
    flagged = {
        f"guided.{name}"
        for name in guided.__all__
        if isinstance(getattr(guided, name), type)
        and issubclass(getattr(guided, name), guided.Sampler)
        and getattr(guided, name).pure_noise
        and not getattr(guided, name).increasing
    }
    assert named == flagged
    assert {"guided.DDIM", "guided.FlowHeun", "guided.DiffPIR", "guided.FPS"} <= named
    assert {"guided.DAPS", "guided.PnPDM", "guided.DCPS"} <= named
    assert "guided.Heun" not in named


@pytest.mark.parametrize(
    "build",
    [
        lambda op, y: guided.DiffPIR(op, y, 0.2, lambda_=7.0),
        lambda op, y: guided.DiffPIR(op, y, 0.2, lambda_=7.0, zeta=None, kappa=2.0),
        lambda op, y: guided.REDDiff(op, y, 0.2),
        lambda op, y: guided.DDNMPlus(op, y, 0.2),
        lambda op, y: guided.RePaint(op, y, jump=2, resamplings=2),  # noiseless replacement
        lambda op, y: guided.FPS(op, y, 0.2, particles=4),
        lambda op, y: guided.PnPDM(op, y, 0.2, prior_steps=3),
        lambda op, y: guided.DCPS(op, y, 0.2, blocks=2, langevin_steps=2, gradient_steps=1),
    ],
    ids=["DiffPIR", "DiffPIR-kappa", "REDDiff", "DDNMPlus", "RePaint", "FPS", "PnPDM", "DCPS"],
)
def test_samplers_step_from_pure_noise_as_the_limit_of_steps_just_below_it(build):
    """DiffPIR (rho_t = lambda sigma_n^2 alpha_t^2 / sigma_t^2, 0 at alpha = 0), RED-diff (its
    regulariser computed as x_0 - x_hat), DDNM+, RePaint and FPS (no division by alpha_t at
    the top of a step; FPS's first step divides out no potential), PnP-DM (the grid's times
    are never read) and DCPS (its Langevin drift (alpha_t x_hat - x) / sigma_t^2 + grad and
    DDIM coefficients) run from t = 1 on the rectified schedule, and that run is the limit of
    runs started just below it, with the same draws. (DAPS has its own start rule:
    test_daps.py.)"""
    _, op, y = _problem()
    _, flow = _flow_mixture()
    sampler = build(op, y)
    x_T = guided.initial_noise(RECTIFIED, (4, 8), torch.Generator().manual_seed(0), dtype=F64)
    ts = guided.time_grid(10)
    below = ts.clone()
    below[0] = 1 - 1e-7
    runs = [
        sampler(flow, x_T, grid, generator=torch.Generator().manual_seed(1), check_residual=False)
        for grid in (ts, below)
    ]
    assert torch.isfinite(runs[0]).all()
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-4)
    if isinstance(sampler, guided.DiffPIR):
        assert sampler.rho(0.0, 1.0) == 0.0
