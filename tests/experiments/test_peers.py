"""The deepinv peers: DDRM's eta reaches deepinv's loop, bad values are refused, and the
noise deepinv's DDRM draws is what :class:`experiments.shared.peers.DeepinvDDRM` documents."""

import math

import deepinv
import pytest
import torch

import guided
import operators
import priors

from experiments.shared import peers
from experiments.shared.data import held_out
from priors.adapters import DeepinvDenoiser


class _Recorder(torch.nn.Module):
    """A deepinv denoiser that returns zeros and records what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, float]] = []

    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.calls.append((x.clone(), float(sigma)))
        return torch.zeros_like(x)


def test_deepinv_ddrm_draws_noise_at_a_level_over_sqrt_2():
    torch.manual_seed(0)
    mask = torch.zeros(1, 1, 64, 64)  # nothing observed: every coordinate is pure noise
    physics = deepinv.physics.Inpainting(
        img_size=(1, 64, 64), mask=mask, noise_model=deepinv.physics.GaussianNoise(0.01)
    )
    recorder = _Recorder()
    deepinv.sampling.DDRM(recorder, sigmas=[0.8, 0.4], eta=1.0)(
        physics(torch.zeros(1, 1, 64, 64)), physics
    )
    (first, told_first), (second, told_second) = recorder.calls
    assert (told_first, told_second) == (0.8, 0.4)
    # told 0.8 and 0.4, the inputs' standard deviations are 0.8 / sqrt 2 and 0.4 / sqrt 2
    assert float(first.std()) == pytest.approx(0.8 / math.sqrt(2), rel=0.05)
    assert float(second.std()) == pytest.approx(0.4 / math.sqrt(2), rel=0.05)


def _problem():
    prior = priors.load("digits")
    g = torch.Generator().manual_seed(0)
    x = torch.rand((1, *prior.shape), generator=g) * 2 - 1
    op = operators.Inpainting(torch.rand(prior.shape, generator=g) > 0.5)
    return prior, op, op(x) + 0.05 * torch.randn(op(x).shape, generator=g)


def test_deepinv_ddrm_eta_reaches_the_loop():
    prior, op, y = _problem()
    x_T, ts = torch.zeros(1, *prior.shape), guided.time_grid(3)

    def solve(**kwargs):
        peer = peers.DeepinvDDRM(op, y, 0.05, **kwargs)
        return peer(prior, x_T, ts, generator=torch.Generator().manual_seed(1))

    default = solve()
    assert torch.equal(default, solve(eta=0.85, etab=1.0))  # the defaults are deepinv's
    assert not torch.allclose(default, solve(eta=0.0))
    assert not torch.allclose(default, solve(etab=0.5))


@pytest.mark.parametrize("kwargs", [{"eta": -0.1}, {"eta": 1.5}, {"etab": 2.0}])
def test_deepinv_ddrm_refuses_bad_eta(kwargs):
    _, op, y = _problem()
    with pytest.raises(ValueError, match="eta"):
        peers.DeepinvDDRM(op, y, 0.05, **kwargs)


@pytest.mark.parametrize("lambda_d", [7.0, 2.5])
def test_diffpir_lambda_is_deepinvs_times_two(lambda_d):
    """At deepinv's noise level sigma_bar_t, deepinv's proximal step with its lambda_d equals
    ours with lambda = 2 lambda_d (the paper's units), images mapped from [0, 1] to [-1, 1]."""
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(1, 8, 8, generator=g) > 0.4).double()
    op, sigma_y = operators.Inpainting(mask), 0.1
    x01 = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    physics = deepinv.physics.Inpainting(img_size=(1, 8, 8), mask=mask)
    physics.noise_model = deepinv.physics.GaussianNoise(sigma_y / 2)
    y01 = physics.A(torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64))
    y = 2 * y01 - mask  # the same measurement on images in [-1, 1]
    loop = deepinv.sampling.DiffPIR(
        _Recorder(), deepinv.optim.L2(), sigma=sigma_y / 2, lambda_=lambda_d, max_iter=10
    )
    ours = guided.DiffPIR(op, y, sigma_y, lambda_=2 * lambda_d)
    for t_i in (50, 400, 900):
        sigma_bar = float(loop.reduced_alpha_cumprod[t_i])  # deepinv's sigma_t / alpha_t
        rho_d = float(loop.rhos[t_i])
        theirs = deepinv.optim.L2().prox(x01, y01, physics, gamma=1 / (2 * rho_d))
        rho = ours.rho(1.0, sigma_bar)
        torch.testing.assert_close(ours.proximal(2 * x01 - 1, rho), 2 * theirs - 1)
        if lambda_d == 7.0:  # and the old definition (rho = lambda sigma_y^2 / sigma_bar^2)
            old = 2 * lambda_d * sigma_y**2 / sigma_bar**2  # was off by a factor of 4
            assert rho == pytest.approx(old / 4, rel=1e-12)


def test_deepinv_diffpir_settings_reach_the_loop():
    prior, op, y = _problem()
    x_T, ts = torch.zeros(1, *prior.shape), guided.time_grid(3)

    def solve(**kwargs):
        peer = peers.DeepinvDiffPIR(op, y, 0.05, **kwargs)
        return peer(prior, x_T, ts, generator=torch.Generator().manual_seed(1))

    default = solve()
    assert torch.equal(default, solve(lambda_=7.0, zeta=0.1))  # the defaults are deepinv's
    assert not torch.allclose(default, solve(lambda_=1.0))
    with pytest.raises(ValueError, match="zeta"):
        peers.DeepinvDiffPIR(op, y, 0.05, zeta=1.5)


@pytest.mark.parametrize("peer", [peers.DeepinvDPS, peers.DeepinvPiGDM])
def test_the_weight_reaches_deepinvs_data_fidelity(peer):
    """deepinv keeps the weight in its data-fidelity object: PiGDM's replaces DPS's, and once
    dropped the weight every tuning trial set was silently ignored."""
    prior, op, y = _problem()
    x_T, ts = torch.zeros(1, *prior.shape), guided.time_grid(3)

    def solve(weight):
        return peer(op, y, 0.05, weight=weight)(
            prior, x_T, ts, generator=torch.Generator().manual_seed(1)
        )

    assert torch.equal(solve(1.0), peer(op, y, 0.05)(  # the default is deepinv's
        prior, x_T, ts, generator=torch.Generator().manual_seed(1)))  # fmt: skip
    assert not torch.allclose(solve(1.0), solve(0.2))


@pytest.mark.filterwarnings("ignore::guided.DivergenceWarning")  # a random image, 10 steps
def test_deepinvs_dps_is_our_dps_on_its_linear_beta_grid():
    """deepinv's DPS loop (deterministic solver here) and our Tweedie-form DPS with
    zeta = weight / 2 under DDIM on the ``linear_beta`` grid take the same steps from the same
    start (on our uniform grid they differ by 20): the packages differ in the grid they put DPS
    on, not in its update."""
    prior, op, y = _problem()
    steps, weight = 10, 40.0
    ts = guided.time_grid(steps, "linear_beta", schedule=prior.schedule)
    x_T = guided.initial_noise(
        prior.schedule, (1, *prior.shape), torch.Generator().manual_seed(3), t=float(ts[0])
    )
    term = guided.DPS(op, y, 0.05, zeta=weight / 2)
    ours = guided.DDIM()(guided.GuidedDenoiser(prior, term), x_T, ts)
    solver = deepinv.sampling.DDIMSolver(timesteps=torch.linspace(1, 0, steps + 1))
    loop = deepinv.sampling.DPS(
        DeepinvDenoiser(prior), solver=solver, weight=weight, dtype=torch.float32
    )
    physics = operators.as_deepinv(op, 0.05, dtype=torch.float32)
    theirs = 2 * loop(operators.measurement_to_deepinv(op, y), physics, x_init=x_T) - 1
    unguided = guided.DDIM()(prior, x_T, ts)
    assert (ours - unguided).abs().max() > 0.1  # the guidance moves the sample
    assert torch.allclose(ours, theirs, atol=1e-5), float((ours - theirs).abs().max())


def _digit_problem(rows: int, steps: int):
    """A held-out digit behind a random inpainting mask (its estimate passes white, where the
    clamps bite), deepinv's ``linear_beta`` grid of ``steps`` steps and a start of ``rows`` rows
    on it, and the measurement in deepinv's units for ``rows`` rows."""
    prior = priors.load("digits")
    x = held_out("digits", 1).float()
    g = torch.Generator().manual_seed(0)
    op = operators.Inpainting(torch.rand(prior.shape, generator=g) > 0.5)
    y = op(x) + 0.05 * torch.randn(op(x).shape, generator=g)
    ts = guided.time_grid(steps, "linear_beta", schedule=prior.schedule)
    x_T = guided.initial_noise(
        prior.schedule, (rows, *prior.shape), torch.Generator().manual_seed(3), t=float(ts[0])
    )
    y01 = operators.measurement_to_deepinv(op, y.expand(rows, *y.shape[1:]))
    return prior, op, y, ts, x_T, y01


class _ClippedAtWhite(priors.Wrapper):
    """The prior's estimate clamped to [-3, 1], deepinv's DPS clip ([-1, 1] in its [0, 1]
    units), which deepinv applies to the estimate its step takes as well as to its residual."""

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        return self.prior(x_t, t, **cond).clamp(-3.0, 1.0)


def test_deepinvs_dps_is_our_dps_under_ddpm_given_the_same_noise():
    """The stochastic loops too: our DDPM with DPS (zeta = weight / 2, ``linear_beta`` grid)
    and deepinv's DPS with its DDPM solver, drawing from generators with the same seed (both
    draw one standard normal tensor of the batch's shape per step, in the same order), take
    the same steps, once our estimate is clamped where deepinv clamps its own. So a difference
    between the two packages' DPS scores at the same setting is the luck of the draws, not the
    loop (on digits SR x4 one seed's PSNR of 16 images varies by about 0.4 dB across seeds)."""
    steps, weight = 10, 40.0
    prior, op, y, ts, x_T, y01 = _digit_problem(3, steps)
    term = guided.DPS(op, y, 0.05, zeta=weight / 2)

    def ours(seed: int, clipped: bool = True) -> torch.Tensor:
        denoiser = guided.GuidedDenoiser(_ClippedAtWhite(prior) if clipped else prior, term)
        return guided.DDPM()(denoiser, x_T, ts, generator=torch.Generator().manual_seed(seed))

    solver = deepinv.sampling.DDPMSolver(
        timesteps=torch.linspace(1, 0, steps + 1), rng=torch.Generator().manual_seed(5)
    )
    loop = deepinv.sampling.DPS(
        DeepinvDenoiser(prior), solver=solver, weight=weight, dtype=torch.float32
    )
    physics = operators.as_deepinv(op, 0.05, dtype=torch.float32)
    theirs = 2 * loop(y01, physics, x_init=x_T).detach() - 1
    same = ours(5)
    assert (same - ours(6)).abs().max() > 0.1  # the draws move the samples
    assert torch.allclose(same, theirs, atol=1e-4), float((same - theirs).abs().max())
    assert (ours(5, clipped=False) - theirs).abs().max() > 1e-3  # the clamp is what remains


def test_deepinvs_pigdm_is_our_pigdm_at_variance_4_given_the_same_noise():
    """The bench's deepinv PiGDM (deepinv's DPS loop with ``PiGDMDataFidelity``, which clamps
    nothing) with weight w is our PiGDM with ``variance=4`` (deepinv's r_t^2 of unit-variance
    data on [0, 1] images) and weight w under DDPM on the ``linear_beta`` grid: given the same
    noise the two take the same steps."""
    steps, weight, seed = 10, 5.0, 7
    prior, op, y, ts, x_T, y01 = _digit_problem(3, steps)

    def ours(variance: float) -> torch.Tensor:
        term = guided.PiGDM(op, y, 0.05, weight=weight, variance=variance)
        generator = torch.Generator().manual_seed(seed)
        return guided.DDPM()(guided.GuidedDenoiser(prior, term), x_T, ts, generator=generator)

    peer = peers.DeepinvPiGDM(op, y, 0.05, weight=weight)
    loop = peer.sampler(DeepinvDenoiser(prior), steps, seed)
    theirs = 2 * loop(y01, peer.physics, x_init=x_T).detach() - 1
    same = ours(4.0)
    assert torch.allclose(same, theirs, atol=1e-5), float((same - theirs).abs().max())
    assert (ours(1.0) - theirs).abs().max() > 0.01  # the variance matters


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
def test_deepinvs_dps_draws_its_noise_at_our_level_and_clips_at_white():
    """Unguided (weight 0), 25 steps, 64 samples on the ``linear_beta`` grid: deepinv's DDPM
    and our DDPM move their samples from the deterministic path by the same amount (the
    ancestral noise is drawn at one level: a level off by a factor would show here, where the
    equivalence test above runs the deterministic steps only). deepinv's DPS clips its
    denoised estimate to [-1, 1] in its [0, 1] units at every step, which in ours is [-3, 1]:
    it clips at white only, its output never passes white while ours does, and its steps
    differ from ours by a few thousandths where the estimate passed white (the apps' scores
    clamp both to the data range)."""
    prior, op, y = _problem()
    steps, n = 25, 64
    ts = guided.time_grid(steps, "linear_beta", schedule=prior.schedule)
    x_T = guided.initial_noise(
        prior.schedule, (n, *prior.shape), torch.Generator().manual_seed(3), t=float(ts[0])
    )
    physics = operators.as_deepinv(op, 0.05, dtype=torch.float32)

    def theirs(solver):
        loop = deepinv.sampling.DPS(
            DeepinvDenoiser(prior), solver=solver, weight=0.0, dtype=torch.float32
        )
        y01 = operators.measurement_to_deepinv(op, y.expand(n, *y.shape[1:]))
        return (2 * loop(y01, physics, x_init=x_T) - 1).detach()

    tt = torch.linspace(1, 0, steps + 1)
    det = guided.DDIM()(prior, x_T, ts)
    ours = guided.DDPM()(prior, x_T, ts, generator=torch.Generator().manual_seed(1))
    det_theirs = theirs(deepinv.sampling.DDIMSolver(timesteps=tt))
    ddpm_theirs = theirs(
        deepinv.sampling.DDPMSolver(timesteps=tt, rng=torch.Generator().manual_seed(2))
    )
    assert float(det.max()) > 1.05 and float(det_theirs.max()) <= 1  # clipped at white
    assert float(det_theirs.min()) < -1.05  # and not at black
    assert torch.allclose(det.clamp(max=1), det_theirs, atol=5e-3)
    spread = float((ours.clamp(-1, 1) - det.clamp(-1, 1)).std())  # clamped, for the clip
    ddpm_theirs, det_theirs = ddpm_theirs.clamp(-1, 1), det_theirs.clamp(-1, 1)
    spread_theirs = float((ddpm_theirs - det_theirs).std())
    assert spread > 0.3  # the draws move the samples
    assert spread_theirs == pytest.approx(spread, rel=0.03), (spread, spread_theirs)
