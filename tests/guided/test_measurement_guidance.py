"""Measurement guidance: PiGDM is the exact posterior mean for N(mu, I) priors; DPS is its
small-noise limit; one VJP for all terms; per-sample reductions; clear errors."""

import itertools
import math

import pytest
import torch

import guided
import operators
import priors

from tests.guided.linear_cases import CASES, Dense, Flat, matrix_of

F64 = torch.float64


def _unit_gaussian(d, seed=0, variance=1.0):
    mean = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    covariance = variance * torch.eye(d, dtype=F64)[None]
    return priors.GaussianMixture(torch.ones(1), mean[None], covariance, priors.CosineSchedule())


@pytest.mark.parametrize("variance", [1.0, 0.15])
@pytest.mark.parametrize("sigma_y", [0.2, 0.0])
@pytest.mark.parametrize("name", sorted(CASES))
def test_pigdm_is_the_exact_posterior_mean_for_an_isotropic_gaussian_prior(
    name, sigma_y, variance
):
    """With ``variance=v`` PiGDM is exact for N(mu, v I) priors (v = 1: the paper's)."""
    op, d = CASES[name]
    prior = _unit_gaussian(d, variance=variance)
    g = torch.Generator().manual_seed(2)
    x = prior.sample(1, g)
    a = matrix_of(op, d)
    y = x @ a.T + sigma_y * torch.randn(1, a.shape[0], generator=g, dtype=F64)
    rows = slice(None)
    if isinstance(op, operators.Inpainting):  # unobserved rows are zero: keep the others
        y = y * op.mask
        rows = op.mask.bool()
    exact = prior.posterior(a[rows], y[0][rows], sigma_y)
    image_prior = prior if op.in_shape == (d,) else Flat(prior, op.in_shape)
    guided_prior = guided.GuidedDenoiser(
        image_prior,
        guided.PiGDM(op, y.view(1, *op.out_shape), sigma_y, iterations=200, variance=variance),
    )
    for t in (0.05, 0.4, 0.9):
        x_t = torch.randn(4, d, generator=g, dtype=F64)
        expected = exact(x_t, torch.tensor(t))
        got = guided_prior(x_t.view(4, *op.in_shape), torch.tensor(t)).reshape(4, d)
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-7)


def test_pigdm_sampling_matches_the_exact_posterior():
    op, d = CASES["matrix"]
    prior = _unit_gaussian(d, seed=3)
    g = torch.Generator().manual_seed(4)
    y = op(prior.sample(1, g)) + 0.3 * torch.randn(1, 3, generator=g, dtype=F64)
    exact = prior.posterior(op.matrix, y[0], 0.3)
    x_T = guided.initial_noise(prior.schedule, (4000, d), g, dtype=F64)
    samples = guided.DDPM()(
        guided.GuidedDenoiser(prior, guided.PiGDM(op, y, 0.3)),
        x_T,
        guided.time_grid(100),
        generator=g,
    )
    reference = exact.sample(4000, g)
    torch.testing.assert_close(samples.mean(0), reference.mean(0), rtol=0, atol=0.08)
    torch.testing.assert_close(torch.cov(samples.T), torch.cov(reference.T), rtol=0, atol=0.1)


def test_dps_is_the_small_noise_limit_of_pigdm():
    op, d = CASES["matrix"]
    prior = _unit_gaussian(d)
    y = torch.randn(2, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    x_t = torch.randn(2, d, generator=torch.Generator().manual_seed(6), dtype=F64)
    t = torch.tensor(1e-3)
    dps = guided.GuidedDenoiser(prior, guided.DPS(op, y, 0.5))(x_t, t)
    pigdm = guided.GuidedDenoiser(prior, guided.PiGDM(op, y, 0.5))(x_t, t)
    torch.testing.assert_close(dps, pigdm, rtol=1e-5, atol=1e-5)


def test_terms_share_one_vjp_and_add_up():
    op, d = CASES["matrix"]
    prior = _unit_gaussian(d)
    g = torch.Generator().manual_seed(7)
    y1 = torch.randn(1, 3, generator=g, dtype=F64)
    mask = operators.Inpainting(torch.tensor([1.0, 1, 0, 0, 0, 1], dtype=F64))
    y2 = mask(torch.randn(1, d, generator=g, dtype=F64))
    x_t, t = torch.randn(3, d, generator=g, dtype=F64), torch.tensor(0.5)
    a, b = guided.PiGDM(op, y1, 0.1), guided.DPS(mask, y2, 0.2, weight=0.5)
    cost = priors.Cost()
    with priors.measure(cost, batch=3):
        both = guided.GuidedDenoiser(prior, a, b)(x_t, t)
    assert cost.nfe == 1 and cost.vjp == 1
    base = prior(x_t, t)
    separate = guided.GuidedDenoiser(prior, a)(x_t, t) + guided.GuidedDenoiser(prior, b)(x_t, t)
    torch.testing.assert_close(both, separate - base)


def test_dps_norms_are_per_sample():
    op, d = CASES["matrix"]
    prior = _unit_gaussian(d)
    g = torch.Generator().manual_seed(8)
    y = torch.randn(1, 3, generator=g, dtype=F64)
    denoiser = guided.GuidedDenoiser(prior, guided.DPS(op, y, 0.0, zeta=0.7))
    x_t, t = torch.randn(2, d, generator=g, dtype=F64), torch.tensor(0.3)
    first = denoiser(x_t, t)
    x_t[1] *= 10  # a wildly different companion must not change row 0
    torch.testing.assert_close(denoiser(x_t, t)[0], first[0], rtol=0, atol=0)


def test_dps_sampler_pulls_towards_the_measurement():
    op, d = CASES["inpainting"]
    prior = _unit_gaussian(d, seed=9)
    g = torch.Generator().manual_seed(10)
    truth = prior.sample(1, g)
    y = op(truth)
    x_T = guided.initial_noise(prior.schedule, (200, d), g, dtype=F64)
    ts = guided.time_grid(200)
    cost = priors.Cost()
    plain = guided.DDPM()(prior, x_T, ts, generator=torch.Generator().manual_seed(0))
    steered = guided.DPSSampler(op, y, zeta=0.5)(
        prior, x_T, ts, generator=torch.Generator().manual_seed(0), cost=cost
    )
    residual = lambda x: (op(x) - y).norm(dim=1).mean()  # noqa: E731
    assert float(residual(steered)) < 0.2 * float(residual(plain))
    assert cost.nfe == 200 and cost.vjp == 200


def test_nonlinear_dps_runs_and_poisson_needs_counts():
    sensor = operators.SaturatingSensor((6,), gain=1.5)
    prior = _unit_gaussian(6)
    y = sensor(prior.sample(1, torch.Generator().manual_seed(11)))
    out = guided.DDIM()(
        guided.GuidedDenoiser(prior, guided.DPS(sensor, y, 0.05)),
        guided.initial_noise(prior.schedule, (8, 6), torch.Generator().manual_seed(0), dtype=F64),
        guided.time_grid(50),
    )
    assert bool(torch.isfinite(out).all())
    op = operators.Inpainting(torch.ones(6, dtype=F64))
    with pytest.raises(ValueError, match="non-negative"):
        guided.PoissonDPS(op, -torch.ones(1, 6, dtype=F64), zeta=1.0, gain=0.1)
    with pytest.raises(TypeError, match="gain"):
        guided.PoissonDPS(op, torch.ones(1, 6, dtype=F64), zeta=1.0)  # the gain is needed
    for gain in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="gain must be a finite number > 0"):
            guided.PoissonDPS(op, torch.ones(1, 6, dtype=F64), gain=gain)


def _poisson_problem(gain, error=0.02):
    """Intensities from 0.05 to 1 (5 to 100 counts at gain 0.01), a positive blurring matrix,
    the noisy and the noiseless measurement, and an estimate ``error`` away from the truth."""
    g = torch.Generator().manual_seed(30)
    a = torch.eye(6, dtype=F64) + 0.05 * torch.rand(6, 6, generator=g, dtype=F64)
    truth = torch.linalg.solve(a, torch.linspace(0.05, 1.0, 6, dtype=F64))  # A x in [.05, 1]
    op = operators.MatrixOperator(a)
    y = operators.PoissonNoise(gain)(op(truth[None]), g)
    x_hat = truth[None] * (1 + error * torch.randn(1, 6, generator=g, dtype=F64))
    return op, y, op(truth[None]), x_hat


@pytest.mark.parametrize("gain", [0.01, 0.002])
def test_poisson_dps_score_is_the_poisson_likelihood_gradient_in_count_units(gain):
    op, y, mean, x_hat = _poisson_problem(gain)
    term = guided.PoissonDPS(op, y, zeta=None, gain=gain)
    schedule = priors.LinearSchedule()
    v = term.vector(x_hat, torch.tensor(0.5), x_hat, schedule)
    counts = y / gain
    x = x_hat.clone().requires_grad_(True)
    rate = op(x) / gain  # the Poisson mean in counts
    # the Gaussian approximation in count units: variance = the count (at least 1)
    approx = -0.5 * ((counts - rate) ** 2 / counts.clamp_min(1.0)).sum()
    (expected,) = torch.autograd.grad(approx, x)
    torch.testing.assert_close(v, expected, rtol=1e-10, atol=1e-12)
    # and the exact Poisson score, sum(c log(rate) - rate), agrees with it to first order in
    # A x_hat - y (here at the noiseless intensities, 2% away)
    v = guided.PoissonDPS(op, mean, zeta=None, gain=gain).vector(x_hat, None, x_hat, schedule)
    rate = op(x) / gain
    (exact,) = torch.autograd.grad((mean / gain * rate.log() - rate).sum(), x)
    assert float((v - exact).norm() / exact.norm()) < 0.05


def test_poisson_dps_normalised_step_follows_the_poisson_gradient():
    """Intensities over a 20x range: the weighted direction points along the exact Poisson
    score; the unweighted one (a weight that is constant over intensities) does not."""
    gain = 0.01
    op, y, mean, _ = _poisson_problem(gain)
    x_hat = torch.linalg.solve(op.matrix, 1.2 * mean[0])[None]  # 20% too bright everywhere
    schedule = priors.LinearSchedule()
    v = guided.PoissonDPS(op, y, zeta=1.0, gain=gain).vector(x_hat, None, x_hat, schedule)
    unweighted = guided.DPS(op, y, 0.1, zeta=1.0).vector(x_hat, None, x_hat, schedule)
    x = x_hat.clone().requires_grad_(True)
    rate = op(x) / gain
    (exact,) = torch.autograd.grad((y / gain * rate.log() - rate).sum(), x)
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(v, exact)) > 0.99, float(cos(v, exact))
    assert float(cos(unweighted, exact)) < 0.9, float(cos(unweighted, exact))
    # the paper's normalisation: zeta / ||y - A x_hat||_Lambda with Lambda = 1 / (2 Var y)
    r = y - op(x_hat)
    lam = 1 / (2 * gain * y.clamp_min(gain))
    expected = (r * lam) @ op.matrix / (r * lam * r).sum().sqrt()
    torch.testing.assert_close(v, expected)


def test_errors_name_the_problem():
    op, _ = CASES["matrix"]
    y = torch.zeros(1, 3, dtype=F64)
    with pytest.raises(TypeError, match="LinearOperator"):
        guided.PiGDM(operators.SaturatingSensor((6,)), torch.zeros(1, 6), 0.1)
    with pytest.raises(TypeError, match="derivative-free"):
        guided.DPS(operators.Quantization((6,)), torch.zeros(1, 6), 0.1)
    with pytest.raises(ValueError, match=r"must have shape \(B, 3\), got"):
        guided.PiGDM(op, torch.zeros(1, 4), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        guided.DPS(op, torch.full((1, 3), float("nan")), 0.1)
    with pytest.raises(ValueError, match="sigma_y"):
        guided.PiGDM(op, y, -0.1)
    with pytest.raises(ValueError, match="sigma_y > 0"):
        guided.DPS(op, y, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        guided.GuidedDenoiser(_unit_gaussian(6))


def test_structure_refusals_name_the_need_and_the_alternative():
    """One refusal for every method that needs a LinearOperator or an SVDOperator."""
    sensor, y6 = operators.SaturatingSensor((6,)), torch.zeros(1, 6, dtype=F64)
    dense = Dense(CASES["matrix"][0].matrix)
    y3 = torch.zeros(1, 3, dtype=F64)
    for make, op, y, need in [
        (guided.PiGDM, sensor, y6, r"PiGDM needs a LinearOperator \(adjoint and pseudo-inverse\)"),
        (guided.MMPS, sensor, y6, r"MMPS needs a LinearOperator \(adjoint\)"),
        (guided.DDNMPlus, sensor, y6, r"DDNM\+ needs a LinearOperator \(pseudo-inverse\)"),
        (guided.DiffPIR, sensor, y6, r"DiffPIR needs a LinearOperator \(proximal step\)"),
        (guided.DDRM, dense, y3, r"DDRM needs an SVDOperator \(U, V and singular values\)"),
        (guided.MCGdiff, dense, y3, r"MCGdiff needs an SVDOperator \(U, V and singular values\)"),
    ]:
        with pytest.raises(
            operators.UnsupportedOperator, match=need + r"; got (Dense|SaturatingSensor): "
        ):
            make(op, y, 0.1)


@pytest.mark.parametrize("name", ["matrix", "inpainting", "circular_blur"])
def test_ddrm_reproduces_noiseless_measurements(name):
    op, d = CASES[name]
    prior = _unit_gaussian(d, seed=12)
    image_prior = prior if op.in_shape == (d,) else Flat(prior, op.in_shape)
    g = torch.Generator().manual_seed(13)
    y = op(prior.sample(1, g).view(1, *op.in_shape))
    x_T = guided.initial_noise(prior.schedule, (50, *op.in_shape), g, dtype=F64)
    cost = priors.Cost()
    x = guided.DDRM(op, y, 0.0)(image_prior, x_T, guided.time_grid(30), generator=g, cost=cost)
    torch.testing.assert_close(op(x), y.expand_as(op(x)), rtol=1e-6, atol=1e-6)
    assert cost.nfe == 30 and cost.vjp == 0


def test_ddrm_sample_mean_is_near_the_posterior_mean():
    op, d = CASES["matrix"]
    prior = _unit_gaussian(d, seed=14)
    g = torch.Generator().manual_seed(15)
    y = op(prior.sample(1, g)) + 0.2 * torch.randn(1, 3, generator=g, dtype=F64)
    exact = prior.posterior(op.matrix, y[0], 0.2)
    x_T = guided.initial_noise(prior.schedule, (4000, d), g, dtype=F64)
    x = guided.DDRM(op, y, 0.2)(prior, x_T, guided.time_grid(50), generator=g)
    torch.testing.assert_close(x.mean(0), exact.sample(4000, g).mean(0), rtol=0, atol=0.1)


def test_ddrm_noise_scale_shrinks_the_samples_toward_the_posterior_mean():
    """On a Gaussian prior the denoiser is affine, so a DDRM run is affine in its noise draws:
    with the same draws, scale c gives x(0) + c (x(1) - x(0)) exactly. c = 1 is eq. 8 (the
    default); below 1 the sample mean stays at the posterior mean and the spread shrinks."""
    op, d = CASES["matrix"]
    prior = _unit_gaussian(d, seed=14)
    g = torch.Generator().manual_seed(15)
    y = op(prior.sample(1, g)) + 0.2 * torch.randn(1, 3, generator=g, dtype=F64)
    x_T = guided.initial_noise(prior.schedule, (4000, d), g, dtype=F64)
    ts = guided.time_grid(20)

    def run(**scale):
        ddrm = guided.DDRM(op, y, 0.2, **scale)
        return ddrm(prior, x_T, ts, generator=torch.Generator().manual_seed(16))

    x0, x1, half = run(noise_scale=0.0), run(noise_scale=1.0), run(noise_scale=0.5)
    torch.testing.assert_close(half, x0 + 0.5 * (x1 - x0), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(run(), x1, rtol=0, atol=0)  # the default is 1
    exact = prior.posterior(op.matrix, y[0], 0.2).sample(4000, g)
    torch.testing.assert_close(half.mean(0), exact.mean(0), rtol=0, atol=0.1)
    assert (half.std(0) < 0.8 * x1.std(0)).all()
    for bad, error in ((1.5, ValueError), (-0.1, ValueError), (math.nan, ValueError),
                       (math.inf, ValueError), ("0.5", TypeError)):  # fmt: skip
        with pytest.raises(error, match="noise_scale"):
            guided.DDRM(op, y, 0.2, noise_scale=bad)


def test_guided_sampling_stops_with_a_message_when_it_diverges():
    d = 6

    class Exploding(guided.Guidance):
        def vector(self, x_t, t, x_hat, schedule):
            return torch.full_like(x_hat, float("inf"))

    denoiser = guided.GuidedDenoiser(_unit_gaussian(d), Exploding())
    with pytest.raises(
        FloatingPointError, match=r"guidance \(Exploding\) is NaN or Inf at t = 0.5"
    ):
        denoiser(torch.zeros(2, d, dtype=F64), torch.tensor(0.5))
    with pytest.raises(ValueError, match=r"x_t contains NaN or Inf \(12 NaN"):
        denoiser(torch.full((2, d), float("nan"), dtype=F64), torch.tensor(0.5))
    with pytest.raises(TypeError, match="SVDOperator"):
        guided.DDRM(Dense(torch.eye(2, dtype=F64)), torch.zeros(1, 2), 0.1)


@pytest.mark.parametrize("name", ["inpainting", "matrix", "dense_cg"])
def test_ddnm_and_replacement_satisfy_noiseless_measurements(name):
    op, d = CASES[name]
    prior = _unit_gaussian(d, seed=16)
    g = torch.Generator().manual_seed(17)
    y = op(prior.sample(1, g))
    x_t, t = torch.randn(3, d, generator=g, dtype=F64), torch.tensor(0.4)
    ddnm = guided.DDNM(prior, op, y)
    torch.testing.assert_close(op(ddnm(x_t, t)), y.expand(3, -1), rtol=1e-7, atol=1e-7)
    x_T = guided.initial_noise(prior.schedule, (64, d), g, dtype=F64)
    x = guided.DDIM(0.85)(
        prior, x_T, guided.time_grid(30), generator=g, projection=guided.Replacement(op, y)
    )
    torch.testing.assert_close(op(x), y.expand(64, -1), rtol=1e-6, atol=1e-6)


def test_replacement_is_repaint_for_masks():
    mask = torch.tensor([1.0, 0, 1, 0], dtype=F64)
    op = operators.Inpainting(mask)
    y = op(torch.tensor([[2.0, 5.0, -1.0, 7.0]], dtype=F64))
    schedule = priors.CosineSchedule()
    x_s, s = torch.zeros(2, 4, dtype=F64), torch.tensor(0.3)
    out = guided.Replacement(op, y)(x_s, s, schedule, torch.Generator().manual_seed(0))
    alpha, sigma = (float(c) for c in schedule(s))
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(out, mask * (alpha * y + sigma * z))  # unobserved entries kept (0)


def test_ddnm_refuses_noisy_data():
    op, _ = CASES["matrix"]
    with pytest.raises(ValueError, match="noiseless"):
        guided.DDNM(_unit_gaussian(6), op, torch.zeros(1, 3, dtype=F64), sigma_y=0.1)
    with pytest.raises(TypeError, match="LinearOperator"):
        guided.Replacement(operators.SaturatingSensor((6,)), torch.zeros(1, 6))


def test_replacement_refuses_noise_its_operator_would_amplify():
    blur, _ = CASES["circular_blur"]
    y = torch.zeros(1, *blur.out_shape, dtype=F64)
    guided.Replacement(blur, y)  # noiseless: allowed
    with pytest.raises(TypeError, match="DDNMPlus"):
        guided.Replacement(blur, y, sigma_y=0.05)
    with pytest.raises(TypeError, match="1/s_min"):
        guided.RePaint(blur, y, sigma_y=0.05)
    dense, _ = CASES["dense_cg"]
    with pytest.raises(TypeError, match="no SVD"):
        guided.Replacement(dense, torch.zeros(1, *dense.out_shape, dtype=F64), sigma_y=0.05)
    mask = operators.Inpainting(torch.tensor([1.0, 0, 1, 0], dtype=F64))
    guided.Replacement(mask, torch.zeros(1, 4, dtype=F64), sigma_y=0.05)  # equal singulars
    pool = operators.AveragePoolSR((1, 8, 8), 4)  # block averages: equal singular values too
    guided.RePaint(pool, torch.zeros(1, *pool.out_shape, dtype=F64), sigma_y=0.05)


@pytest.mark.parametrize("name", ["inpainting", "matrix", "dense_cg", "circular_blur"])
def test_diffpir_proximal_step_and_noiseless_consistency(name):
    op, d = CASES[name]
    prior = _unit_gaussian(d, seed=18)
    image_prior = prior if op.in_shape == (d,) else Flat(prior, op.in_shape)
    g = torch.Generator().manual_seed(19)
    y = op(prior.sample(1, g).view(1, *op.in_shape))
    sampler = guided.DiffPIR(op, y, 0.1, iterations=200)
    x0 = torch.randn(2, *op.in_shape, generator=g, dtype=F64)
    prox = sampler.proximal(x0, 0.7)  # normal equations: A^T (A x - y) + rho (x - x0) = 0
    residual = op.adjoint(op(prox) - y) + 0.7 * (prox - x0)
    assert float(residual.abs().max()) < 1e-7
    noiseless = guided.DiffPIR(op, y, 0.0)
    x_T = guided.initial_noise(prior.schedule, (16, *op.in_shape), g, dtype=F64)
    cost = priors.Cost()
    x = noiseless(image_prior, x_T, guided.time_grid(20), generator=g, cost=cost)
    torch.testing.assert_close(op(x), y.expand_as(op(x)), rtol=1e-6, atol=1e-6)
    assert cost.nfe == 20 and cost.vjp == 0


def test_diffpir_kappa_keeps_the_same_share_of_eps_on_every_grid():
    """With kappa, a step is the paper's with zeta = 1 - q^(2 kappa), q the step's ratio of
    noise levels; kappa = 1 renews what DDIM's eta = 1 (ancestral) renews, kappa = 0 draws
    nothing; what a run keeps of eps telescopes to (sigma_bar_s / sigma_bar_t)^kappa on any
    grid (the paper's zeta keeps (1 - zeta)^(N / 2), which depends on N); exactly one of
    zeta and kappa is accepted."""
    op, d = CASES["inpainting"]
    prior = _unit_gaussian(d, seed=22)
    g = torch.Generator().manual_seed(23)
    y = op(prior.sample(1, g))
    x_T = guided.initial_noise(prior.schedule, (3, d), g, dtype=F64)
    ts = guided.time_grid(8)[3:5]  # one step, half way
    coefficients = [float(v) for t in ts for v in prior.schedule(t)]
    alpha_t, sigma_t, alpha_s, sigma_s = coefficients
    q = alpha_t * sigma_s / (alpha_s * sigma_t)
    for kappa in (0.5, 3.0):
        ours = guided.DiffPIR(op, y, 0.1, zeta=None, kappa=kappa)
        paper = guided.DiffPIR(op, y, 0.1, zeta=1 - q ** (2 * kappa))
        run = [
            m(prior, x_T, ts, generator=torch.Generator().manual_seed(5)) for m in (ours, paper)
        ]
        torch.testing.assert_close(run[0], run[1])
    ancestral = guided.DiffPIR(op, y, 0.1, zeta=None, kappa=1.0)
    tau = guided.ddim.ddim_coefficients(*coefficients, 1.0)[2]
    assert ancestral.fresh_share(*coefficients) == pytest.approx((tau / sigma_s) ** 2)
    still = guided.DiffPIR(op, y, 0.1, zeta=None, kappa=0.0)
    a, b = (still(prior, x_T, ts, generator=torch.Generator().manual_seed(k)) for k in (1, 2))
    torch.testing.assert_close(a, b)  # no fresh noise

    def kept(sampler, steps):  # the product of sqrt(1 - zeta) between t = 0.8 and t = 0.2
        grid = torch.linspace(0.8, 0.2, steps + 1, dtype=F64)
        levels = [[float(v) for v in prior.schedule(t)] for t in grid]
        shares = [sampler.fresh_share(*a, *b) for a, b in itertools.pairwise(levels)]
        return math.prod(math.sqrt(1 - z) for z in shares), levels

    sampler = guided.DiffPIR(op, y, 0.1, zeta=None, kappa=3.0)
    (coarse, levels), (fine, _) = kept(sampler, 5), kept(sampler, 200)
    ratio = (levels[-1][1] / levels[-1][0]) / (levels[0][1] / levels[0][0])
    assert coarse == pytest.approx(ratio**3.0, rel=1e-9) and fine == pytest.approx(coarse)
    paper = guided.DiffPIR(op, y, 0.1, zeta=0.3)
    assert kept(paper, 200)[0] < kept(paper, 5)[0] / 100  # the paper's share depends on N
    for kwargs in ({"kappa": 2.0}, {"zeta": None}):
        with pytest.raises(ValueError, match="exactly one of zeta"):
            guided.DiffPIR(op, y, 0.1, **kwargs)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="kappa"):
            guided.DiffPIR(op, y, 0.1, zeta=None, kappa=bad)
    with pytest.raises(TypeError, match="kappa"):
        guided.DiffPIR(op, y, 0.1, zeta=None, kappa="10")


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, "0.1"])
def test_pigdm_refuses_a_variance_that_is_not_a_positive_finite_number(bad):
    op, d = CASES["inpainting"]
    error = TypeError if isinstance(bad, str) else ValueError
    with pytest.raises(error, match="variance"):
        guided.PiGDM(op, torch.zeros(1, d, dtype=F64), 0.1, variance=bad)


def _authors_jump_schedule(t_T, jump_length, jump_n_sample):
    """The time indices of RePaint's ``get_schedule_jump`` (n_sample = 1, no second or third
    jump level), transcribed from its loop: start at t_T - 1, end at -1 (the clean sample)."""
    jumps = {j: jump_n_sample - 1 for j in range(0, t_T - jump_length, jump_length)}
    t, ts = t_T, []
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                ts.append(t)
    return [*ts, -1]


@pytest.mark.parametrize(("steps", "jump", "resamplings"), [(250, 10, 10), (20, 5, 3), (7, 3, 2)])
def test_repaint_schedule_is_the_authors(steps, jump, resamplings):
    op = operators.Inpainting(torch.tensor([1.0, 0.0], dtype=F64))
    ts = guided.time_grid(steps)
    pairs = guided.RePaint(op, torch.zeros(1, 2, dtype=F64), jump, resamplings).pairs(ts)
    ours = [steps - int((ts == t).nonzero()) for t, _ in pairs] + [0]  # steps still to go
    theirs = [t + 1 for t in _authors_jump_schedule(steps, jump, resamplings)]
    assert ours == theirs
    assert ours.count(0) == 1  # the clean sample is never re-noised


def test_repaint_walks_back_and_meets_noiseless_measurements():
    mask = torch.tensor([1.0, 0, 1, 0, 1, 1], dtype=F64)
    op = operators.Inpainting(mask)
    prior = _unit_gaussian(6, seed=20)
    g = torch.Generator().manual_seed(21)
    y = op(prior.sample(1, g))
    ts = guided.time_grid(20)
    sampler = guided.RePaint(op, y, jump=5, resamplings=3)
    pairs = sampler.pairs(ts)
    down = sum(bool(s < t) for t, s in pairs)
    up = sum(bool(s > t) for t, s in pairs)
    assert (down, up) == (20 + 2 * 5 * 3, 2 * 5 * 3)  # back 5 points twice at k = 1, 6, 11
    assert float(pairs[0][0]) == 1.0 and float(pairs[-1][1]) == 0.0
    plain = guided.RePaint(op, y, jump=5, resamplings=1).pairs(ts)
    assert [(float(t), float(s)) for t, s in plain] == list(
        zip(ts[:-1].tolist(), ts[1:].tolist(), strict=True)
    )
    x_T = guided.initial_noise(prior.schedule, (32, 6), g, dtype=F64)
    cost = priors.Cost()
    x = sampler(prior, x_T, ts, generator=g, cost=cost)
    assert cost.nfe == down
    torch.testing.assert_close(op(x), y.expand(32, -1), rtol=1e-6, atol=1e-6)
    # the unobserved coordinates follow the prior's conditional: here the prior is N(mu, I)
    mean = prior.means[0]
    assert float((x[:, 1] - mean[1]).mean().abs()) < 4 / 32**0.5


@pytest.mark.parametrize("name", ["inpainting", "matrix"])
def test_ddnm_plus_is_ddnm_without_noise_and_does_not_copy_noise(name):
    op, d = CASES[name]
    prior = _unit_gaussian(d, seed=22)
    g = torch.Generator().manual_seed(23)
    y = op(prior.sample(1, g))
    x_T = guided.initial_noise(prior.schedule, (8, d), g, dtype=F64)
    ts = guided.time_grid(20)
    plus = guided.DDNMPlus(op, y, 0.0)(prior, x_T, ts, generator=torch.Generator().manual_seed(1))
    ddnm = guided.DDPM()(
        guided.DDNM(prior, op, y), x_T, ts, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(plus, ddnm)
    sigma_y = 0.3
    seen = op(torch.ones(1, d, dtype=F64)) != 0
    noisy = y + sigma_y * torch.randn(y.shape, generator=g, dtype=F64) * seen
    x_T = guided.initial_noise(prior.schedule, (400, d), g, dtype=F64)
    x = guided.DDNMPlus(op, noisy, sigma_y)(prior, x_T, ts, generator=g)
    residual = float((op(x) - noisy).pow(2).mean().sqrt())
    assert 0.05 * sigma_y < residual < 1.5 * sigma_y  # not a copy of the noisy data
    with pytest.raises(TypeError, match="LinearOperator.*DPS"):
        guided.DDNMPlus(operators.SaturatingSensor((6,)), torch.zeros(1, 6), 0.1)


def test_ddnm_plus_does_not_amplify_noise_through_small_singular_values():
    op, d = CASES["circular_blur"]
    prior = _unit_gaussian(d, seed=24)
    g = torch.Generator().manual_seed(25)
    truth = prior.sample(4, g).view(4, *op.in_shape)
    sigma_y = 0.1
    y = op(truth) + sigma_y * torch.randn(4, *op.out_shape, generator=g, dtype=F64)
    x_T = guided.initial_noise(prior.schedule, (4, *op.in_shape), g, dtype=F64)
    sampler = guided.DDNMPlus(op, y, sigma_y, cutoff=0.0)  # every singular value kept
    x = sampler(Flat(prior, op.in_shape), x_T, guided.time_grid(30), generator=g)
    err = float((x - truth).pow(2).mean().sqrt())
    matrix = matrix_of(op, d)
    exact = torch.stack(
        [prior.posterior(matrix, y[i].flatten(), sigma_y).sample(1, g)[0] for i in range(4)]
    )
    err_exact = float((exact - truth.flatten(1)).pow(2).mean().sqrt())
    err_pinv = float((op.pinv(y) - truth).pow(2).mean().sqrt())
    assert float(op.singulars.min()) < 0.1  # 1 / s amplifies the noise 38x in A^+ y
    assert err < 1.3 * err_exact and err < err_pinv, (err, err_exact, err_pinv)


@pytest.mark.parametrize("noise", [None, 0.1])
def test_the_divergence_warning_says_whether_a_noise_level_was_given(noise):
    """A holder without sigma_y (DPSSampler, the paper's sampler) is not told a noise level:
    the warning says so instead of quoting a level of 0."""
    from guided.measurements import Measurement, warn_if_far

    op = operators.MatrixOperator(torch.eye(3, dtype=F64))
    m = Measurement("Holder", op, torch.zeros(1, 3, dtype=F64), noise)
    with pytest.warns(guided.DivergenceWarning) as caught:
        warn_if_far(torch.full((1, 3), 5.0, dtype=F64), [m], "method")
    text = str(caught[0].message)
    if noise is None:
        assert "no noise level (Holder is not given one; 0 assumed)" in text
    else:
        assert "against a noise level of 0.1 (limit" in text


@pytest.mark.parametrize("sigma_y", [None, 0.1])
def test_the_dps_sampler_tells_the_divergence_check_its_noise_level(sigma_y):
    """The paper's update does not use sigma_y, but the divergence check must not be told a
    level of 0 when the measurement is noisy: DPSSampler passes the level it is given (None
    when it is not given one)."""
    from guided.measurements import measurements

    op = operators.MatrixOperator(torch.eye(3, dtype=F64))
    sampler = guided.DPSSampler(op, torch.zeros(1, 3, dtype=F64), sigma_y=sigma_y)
    (found,) = measurements(sampler)
    assert found.noise == sigma_y
