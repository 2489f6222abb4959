"""Samplers against the exact Gaussian-mixture prior.

Bounds:
- Sliced Wasserstein (SW, 100 fixed directions) between n sampler draws and n exact draws is,
  for an unbiased sampler, distributed like SW between two independent exact sets. We
  estimate that null distribution from 30 exact-vs-exact pairs and accept mean + 4 std:
  a one-sided margin an unbiased sampler exceeds with probability < 1e-4 under a normal
  approximation, while a visible bias (test_sw_bound_detects_a_biased_sampler) exceeds it.
- Mode weights: the fraction of draws assigned to component k (largest responsibility; the
  modes are separated by > 10 standard deviations) is binomial with standard error
  sqrt(w_k (1 - w_k) / n); every fraction must lie within 3 of them of w_k.
Steps are chosen so that the discretisation bias is below the sampling noise at n = 4000:
first-order samplers (DDPM, DDIM) need a few hundred steps on these sharp mixtures,
second-order ones (DPM-Solver++, Heun) 50.
"""

import itertools
import math

import numpy as np
import pytest
import torch

import guided
import priors

from evaluation import probability_flow, random_directions, sliced_wasserstein
from tests.conftest import SCHEDULES, well_separated_mixture

N = 4000
SAMPLERS = {
    "ddpm": (guided.DDPM, 1000),
    "ddim": (guided.DDIM, 250),
    "ddim_eta_0.5": (lambda: guided.DDIM(eta=0.5), 250),
    "dpm_solver": (guided.DPMSolver, 50),
    "heun": (guided.Heun, 50),
}


def exact_start(prior, n, generator):
    """x_1 drawn from the exact marginal p_1 of the mixture."""
    alpha_1, sigma_1 = prior.schedule(1.0)
    x = prior.sample(n, generator)
    return alpha_1 * x + sigma_1 * torch.randn(x.shape, generator=generator, dtype=torch.float64)


class Null:
    """Exact-vs-exact SW distribution and the acceptance bound for one prior."""

    def __init__(self, prior, seed=123):
        g = torch.Generator().manual_seed(seed)
        self.directions = random_directions(prior.shape[0], 100, g)
        self.reference = prior.sample(N, g)
        null = torch.tensor(
            [
                sliced_wasserstein(prior.sample(N, g), self.reference, self.directions)
                for _ in range(30)
            ]
        )
        self.bound = float(null.mean() + 4 * null.std())

    def sw(self, x):
        return sliced_wasserstein(x, self.reference, self.directions)


@pytest.fixture(scope="module", params=[2, 8], ids=["2d", "8d"])
def linear_case(request):
    prior = well_separated_mixture(request.param, priors.LinearSchedule())
    return prior, Null(prior)


def mode_weight_z(prior, x):
    counts = prior.responsibilities(x).argmax(1).bincount(minlength=prior.weights.numel())
    freq = counts.double() / x.shape[0]
    return (freq - prior.weights) / (prior.weights * (1 - prior.weights) / x.shape[0]).sqrt()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_reproduces_the_mixture(linear_case, name):
    prior, null = linear_case
    build, steps = SAMPLERS[name]
    g = torch.Generator().manual_seed(7)
    ts = guided.time_grid(steps, "karras", schedule=prior.schedule)
    x = build()(prior, exact_start(prior, N, g), ts, generator=g)
    assert x.shape == (N, prior.shape[0]) and torch.isfinite(x).all()
    assert null.sw(x) < null.bound
    z = mode_weight_z(prior, x)
    assert (z.abs() < 3).all(), f"mode weights off by {z.tolist()} standard errors"


@pytest.mark.parametrize("schedule_name", ["cosine", "edm"])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_reproduces_the_mixture_under_other_schedules(schedule_name, name):
    prior = well_separated_mixture(2, SCHEDULES[schedule_name]())
    null = _null_for(schedule_name, prior)
    build, steps = SAMPLERS[name]
    g = torch.Generator().manual_seed(11)
    ts = guided.time_grid(steps, "karras", schedule=prior.schedule)
    x = build()(prior, exact_start(prior, N, g), ts, generator=g)
    assert null.sw(x) < null.bound


_NULLS: dict = {}


def _null_for(key, prior):
    if key not in _NULLS:
        _NULLS[key] = Null(prior)
    return _NULLS[key]


def test_sw_bound_detects_a_biased_sampler(linear_case):
    prior, null = linear_case
    g = torch.Generator().manual_seed(7)
    ts = guided.time_grid(5, "karras", schedule=prior.schedule)
    x = guided.DDIM()(prior, exact_start(prior, N, g), ts)
    assert null.sw(x) > null.bound


def test_dpm_solver_beats_ddim_against_the_probability_flow():
    prior = well_separated_mixture(2, priors.EDMSchedule())
    g = torch.Generator().manual_seed(0)
    x_T = 80.0 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    reference = probability_flow(prior, x_T)

    def error(sampler, steps):
        x = sampler(prior, x_T, guided.time_grid(steps))
        return float((x - reference).norm(dim=1).mean())

    ddim = [error(guided.DDIM(), steps) for steps in (10, 20, 40, 80)]
    assert error(guided.DPMSolver(), 20) < ddim[1] / 2
    assert all(b < a for a, b in itertools.pairwise(ddim)), ddim
    assert ddim[-1] < ddim[0] / 4  # first order: error ~ 1 / steps
    assert error(guided.Heun(), 20) < ddim[1] / 2


@pytest.mark.parametrize(
    "schedule", [SCHEDULES[k]() for k in sorted(SCHEDULES)], ids=sorted(SCHEDULES)
)
def test_ddim_inversion_round_trip(schedule):
    """Fixed-point inversion solves the DDIM step equation, so sampling returns the input up to
    the fixed-point residual; we accept a mean error of 1% of the smallest component standard
    deviation (0.22). Classic inversion (no iterations) is first-order accurate: its error
    shrinks as the grid is refined."""
    prior = well_separated_mixture(2, schedule)
    g = torch.Generator().manual_seed(0)
    x_0 = prior.sample(256, g)
    smallest_std = float(prior.eigvals.min().sqrt())

    def round_trip(steps, iterations):
        ts = guided.time_grid(steps)
        x_T = guided.DDIMInversion(iterations)(prior, x_0, ts.flip(0))
        return float((guided.DDIM()(prior, x_T, ts) - x_0).norm(dim=1).mean())

    assert round_trip(200, 5) < 0.01 * smallest_std
    classic = [round_trip(steps, 0) for steps in (50, 100, 200)]
    assert classic[1] < 0.75 * classic[0] and classic[2] < 0.75 * classic[1], classic


def test_inverted_noise_is_standard_normal_like():
    prior = well_separated_mixture(2, priors.LinearSchedule())
    x_0 = prior.sample(4000, torch.Generator().manual_seed(0))
    x_T = guided.DDIMInversion(2)(prior, x_0, guided.time_grid(100).flip(0))
    assert x_T.mean(0).abs().max() < 0.1 and (x_T.std(0) - 1).abs().max() < 0.1


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_batch_independence(name):
    """A row's trajectory does not depend on its companions (values or batch size) when each
    row has its own generator, nor on their values with one shared generator."""
    prior = well_separated_mixture(2, priors.LinearSchedule())
    build, _ = SAMPLERS[name]
    ts = guided.time_grid(20)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def run(rows, seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return build()(prior, x[rows], ts, generator=gens)

    alone = run([0], [42])
    with_two = run([0, 1], [42, 1])
    with_four = run([3, 0, 2, 4], [9, 42, 8, 7])
    torch.testing.assert_close(with_two[0], alone[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(with_four[1], alone[0], rtol=0, atol=1e-12)

    shared_a = build()(prior, x[[0, 1]], ts, generator=torch.Generator().manual_seed(3))
    shared_b = build()(prior, x[[0, 2]], ts, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(shared_a[0], shared_b[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_generator_same_result(name):
    prior = well_separated_mixture(2, priors.CosineSchedule())
    build, _ = SAMPLERS[name]
    x = torch.randn(8, 2)
    a = build()(prior, x, guided.time_grid(10), generator=torch.Generator().manual_seed(5))
    b = build()(prior, x, guided.time_grid(10), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.dtype == torch.float32


@pytest.mark.parametrize(
    "sampler, steps, nfe",
    [
        (guided.DDPM(), 10, 10),
        (guided.DDIM(), 10, 10),
        (guided.DPMSolver(), 10, 10),
        (guided.Heun(), 10, 19),  # the last step to sigma = 0 is an Euler step
        (guided.DDIMInversion(3), 10, 40),
    ],
)
def test_cost_accounting(sampler, steps, nfe):
    prior = well_separated_mixture(2, priors.LinearSchedule())
    ts = guided.time_grid(steps)
    ts = ts.flip(0) if sampler.increasing else ts
    cost = priors.Cost()
    sampler(prior, torch.randn(6, 2), ts, cost=cost)
    assert cost.nfe == nfe and cost.vjp == 0
    sampler(prior, torch.randn(3, 2), ts, cost=cost)  # costs accumulate across runs
    assert cost.nfe == 2 * nfe


def test_heun_on_edm_spends_two_evaluations_every_step():
    prior = well_separated_mixture(2, priors.EDMSchedule())
    cost = priors.Cost()
    guided.Heun()(prior, torch.randn(4, 2), guided.time_grid(10), cost=cost)
    assert cost.nfe == 20


class CountingProjection(guided.Projection):
    def __init__(self):
        self.times = []

    def __call__(self, x_s, s, schedule, generator=None):
        self.times.append(float(s))
        return x_s.clamp(-1, 1)


def test_projection_and_callback_run_after_every_step():
    prior = well_separated_mixture(2, priors.LinearSchedule())
    ts = guided.time_grid(7)
    projection = CountingProjection()
    seen = []
    x = guided.DDIM()(
        prior,
        torch.randn(4, 2),
        ts,
        projection=projection,
        callback=lambda i, s, x_s: seen.append((i, float(s), float(x_s.abs().max()))),
    )
    assert projection.times == ts[1:].tolist()
    assert [i for i, _, _ in seen] == list(range(7))
    assert all(m <= 1 for _, _, m in seen) and x.abs().max() <= 1


def test_progress_bar_runs(capsys):
    prior = well_separated_mixture(2, priors.LinearSchedule())
    x = guided.DPMSolver()(prior, torch.randn(2, 2), guided.time_grid(3), progress=True)
    assert torch.isfinite(x).all()


def test_time_grids():
    for kind in ("uniform", "quadratic"):
        ts = guided.time_grid(10, kind)
        assert ts.shape == (11,) and ts[0] == 1 and ts[-1] == 0 and (ts.diff() < 0).all()
    for name, schedule in SCHEDULES.items():
        if name == "rectified":  # its top level is infinite: t = 1, then 80 (Karras et al.)
            ts = guided.time_grid(12, "karras", schedule=schedule())
            assert ts.shape == (13,) and ts[0] == 1 and ts[-1] == 0 and (ts.diff() < 0).all()
            root = torch.exp(-schedule().log_snr(ts[1:-1])) ** (1 / 7)
            torch.testing.assert_close(root.diff(), root.diff().mean().expand(10), rtol=1e-6,
                                       atol=1e-9)  # fmt: skip
            assert float(root[0] ** 7) == pytest.approx(80, rel=1e-9)
            assert float(root[-1] ** 7) == pytest.approx(0.002, rel=1e-6)
            continue
        ts = guided.time_grid(12, "karras", schedule=schedule())
        assert ts.shape == (13,) and ts[0] == 1 and ts[-1] == 0 and (ts.diff() < 0).all(), name
        sigmas = torch.exp(-schedule().log_snr(ts[:-1]))
        if name != "edm":  # rho-spacing from sigma_max down to sigma_min = 0.002
            root = sigmas ** (1 / 7)
            torch.testing.assert_close(
                root.diff(), root.diff().mean().expand(11), rtol=1e-6, atol=1e-9
            )
            assert float(sigmas[-1]) == pytest.approx(0.002, rel=1e-6)
    torch.testing.assert_close(
        guided.time_grid(9, "karras", schedule=priors.EDMSchedule()),
        guided.time_grid(9),
        rtol=0,
        atol=1e-12,
    )


@pytest.mark.parametrize("steps", [1, 2, 5, 12])
def test_a_karras_grid_below_the_top_jumps_from_pure_noise_to_sigma_max(steps):
    """sigma_max below the schedule's top level: t = 1, then the rho-spacing from sigma_max
    (the grid a flow prior's DAPS takes); at or above the top it is the default grid."""
    for schedule in (priors.RectifiedSchedule(), priors.CosineSchedule(), priors.EDMSchedule()):
        ts = guided.time_grid(steps, "karras", schedule=schedule, sigma_max=10.0)
        assert ts.shape == (steps + 1,) and ts[0] == 1 and ts[-1] == 0
        assert (ts.diff() < 0).all(), (schedule, ts)
        if steps > 1:
            level = float(torch.exp(-schedule.log_snr(ts[1])))
            assert level == pytest.approx(10.0, rel=1e-9)
        top = float(torch.exp(-schedule.log_snr(torch.tensor(1.0, dtype=torch.float64))))
        if math.isfinite(top):
            torch.testing.assert_close(
                guided.time_grid(steps, "karras", schedule=schedule, sigma_max=2 * top),
                guided.time_grid(steps, "karras", schedule=schedule), rtol=0, atol=0,
            )  # fmt: skip
    with pytest.raises(ValueError, match="sigma_max must be"):
        guided.time_grid(5, "karras", schedule=priors.RectifiedSchedule(), sigma_max=-1.0)
    with pytest.raises(ValueError, match="sigma_min=0.5 is not below the largest level 0.1"):
        guided.time_grid(5, "karras", schedule=priors.RectifiedSchedule(), sigma_max=0.1,
                         sigma_min=0.5)  # fmt: skip


@pytest.mark.parametrize("shift", [0.5, 1.0, 3.0])
def test_the_shifted_grid_multiplies_every_rectified_noise_level_by_the_shift(shift):
    schedule = priors.RectifiedSchedule()
    ts = guided.time_grid(10, "shifted", shift=shift)
    assert ts.shape == (11,) and ts[0] == 1 and ts[-1] == 0 and (ts.diff() < 0).all()
    levels = torch.exp(-schedule.log_snr(ts[1:-1]))
    uniform = torch.exp(-schedule.log_snr(guided.time_grid(10)[1:-1]))
    torch.testing.assert_close(levels, shift * uniform, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: guided.time_grid(5, "shifted", shift=0.0), "shift"),
        (lambda: guided.time_grid(5, "shifted", shift=float("inf")), "shift"),
        (lambda: guided.time_grid(0), "steps"),
        (lambda: guided.time_grid(2.5), "steps"),
        (lambda: guided.time_grid(5, "log"), "kind"),
        (lambda: guided.time_grid(5, "karras"), "schedule"),
        (lambda: guided.DDIM(eta=-0.1), "eta"),
        (lambda: guided.DDIM(eta=1.5), "eta"),
        (lambda: guided.DDIMInversion(-1), "iterations"),
    ],
)
def test_bad_construction_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"x_T": torch.randn(3, 4)}, ValueError, "shape"),
        ({"x_T": torch.tensor([[0.0, float("nan")]])}, ValueError, "NaN"),
        ({"ts": torch.tensor([0.0, 0.5, 1.0])}, ValueError, "decreasing"),
        ({"ts": torch.tensor([1.5, 0.0])}, ValueError, r"\[0, 1\]"),
        ({"ts": torch.tensor([1.0])}, ValueError, "at least 2"),
        ({"generator": [torch.Generator()]}, ValueError, "one per row"),
        ({"denoiser": lambda x, t: x}, TypeError, "Denoiser"),
    ],
)
def test_bad_calls_raise(kwargs, error, message):
    prior = well_separated_mixture(2, priors.LinearSchedule())
    call = {"denoiser": prior, "x_T": torch.randn(3, 2), "ts": guided.time_grid(4)} | kwargs
    with pytest.raises(error, match=message):
        guided.DDIM()(call.pop("denoiser"), call.pop("x_T"), call.pop("ts"), **call)


def test_inversion_needs_an_increasing_grid():
    prior = well_separated_mixture(2, priors.LinearSchedule())
    with pytest.raises(ValueError, match="increasing"):
        guided.DDIMInversion()(prior, torch.randn(2, 2), guided.time_grid(4))


def test_initial_noise_scale():
    x = guided.initial_noise(priors.EDMSchedule(), (20000, 2), torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and abs(float(x.std()) - 80) < 2
    np.testing.assert_allclose(float(x.mean()), 0.0, atol=2.0)


class NaNBelow(priors.Denoiser):
    """The prior, but NaN below time ``when`` (a diverging network)."""

    counts_evaluations = False

    def __init__(self, prior, when):
        super().__init__(prior.schedule)
        self.prior, self.when = prior, when

    def forward(self, x_t, t):
        x_hat = self.prior(x_t, t)
        return x_hat * float("nan") if float(t.max()) < self.when else x_hat


@pytest.mark.parametrize("sampler", [guided.DDIM(), guided.DPMSolver(), guided.Heun()])
def test_the_nan_guard_names_the_step_its_times_and_the_denoiser(sampler):
    prior = well_separated_mixture(2, priors.LinearSchedule())
    x_T = guided.initial_noise(prior.schedule, (3, 2), torch.Generator().manual_seed(0))
    name = type(sampler).__name__
    with pytest.raises(FloatingPointError, match=rf"{name} step \d+ of 10 .*NaNBelow"):
        sampler(NaNBelow(prior, 0.45), x_T, guided.time_grid(10))
    assert bool(torch.isfinite(sampler(NaNBelow(prior, -1.0), x_T, guided.time_grid(10))).all())
