"""Latent priors and the latent methods, against pixel-space twins and exact posteriors.

With an orthogonal linear autoencoder (D(z) = W z, E = W^T) a Gaussian latent prior decodes to
a Gaussian pixel prior (the rotated mixture), so: latent DPS on the latents decodes to pixel
DPS on the rotated prior, draw for draw; PSLD's gluing term on inpainting is the DPS residual
norm, so PSLD(zeta a, gamma b) is latent DPS at zeta a + b; latent DAPS samples near the exact
posterior; ReSample's consistency step fits each sample to its tolerance. Autoencoder calls
are counted in the cost; the refusals name the method to use instead."""

import math

import pytest
import torch

import guided
import operators
import priors

from tests.guided.linear_cases import (
    LinearAutoencoder,
    gaussian,
    matrix_of,
    rotated,
    rotation,
)

F64 = torch.float64
D = 6
MASK = torch.tensor([1.0, 0, 1, 1, 0, 1], dtype=F64)


def _setup(seed=0):
    latent = gaussian(D, seed=seed)
    w = rotation(D)
    autoencoder = LinearAutoencoder(w)
    prior = priors.LatentPrior(autoencoder, latent)
    return latent, w, autoencoder, prior


def _measurement(prior, op, sigma_y=0.1, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = prior.decode(prior.prior.sample(1, g))
    return op(x + sigma_y * torch.randn(x.shape, generator=g, dtype=F64))


def test_autoencoder_calls_are_checked_and_counted():
    _, _, autoencoder, _ = _setup()
    cost = priors.Cost()
    with priors.measure(cost, batch=4):
        x = autoencoder.decode(torch.zeros(4, D, dtype=F64))
        autoencoder.encode(x)
        autoencoder.decode(torch.zeros(2, D, dtype=F64))
    assert (cost.decoder, cost.encoder, cost.nfe) == (1.5, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"latents of shape \(B, \*\(6,\)\)"):
        autoencoder.decode(torch.zeros(4, D + 1, dtype=F64))
    with pytest.raises(TypeError, match="real floating"):
        autoencoder.encode(torch.zeros(4, D, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN or Inf"):
        autoencoder.decode(torch.full((1, D), math.inf, dtype=F64))
    huge = LinearAutoencoder(torch.full((D, D), 1e308, dtype=F64))
    with pytest.raises(FloatingPointError, match="decoder output"):
        huge.decode(torch.full((1, D), 10.0, dtype=F64))


def test_a_latent_prior_is_its_latent_denoiser():
    latent, _, _, prior = _setup()
    z = torch.randn(3, D, generator=torch.Generator().manual_seed(2), dtype=F64)
    cost = priors.Cost()
    with priors.measure(cost, batch=3):
        out = prior(z, torch.tensor(0.4))
    torch.testing.assert_close(out, latent(z, torch.tensor(0.4)), rtol=0, atol=0)
    assert cost.nfe == 1  # the latent denoiser's evaluation, counted once
    assert (prior.shape, prior.pixel_shape) == ((D,), (D,))
    wrapped = guided.GuidedDenoiser(prior, guided.DPS(operators.Inpainting(MASK), z[:1], 0.1))
    assert priors.latent_of(wrapped) is prior and priors.latent_of(latent) is None
    with pytest.raises(ValueError, match="same latents"):
        priors.LatentPrior(LinearAutoencoder(torch.eye(D + 1, dtype=F64)), latent)
    with pytest.raises(TypeError, match="priors.Autoencoder"):
        priors.LatentPrior(latent, latent)


def test_the_decoded_operator_is_a_after_d():
    _, w, autoencoder, _ = _setup()
    op = operators.MatrixOperator(torch.randn(3, D, generator=torch.Generator(), dtype=F64))
    decoded = guided.Decoded(op, autoencoder)
    torch.testing.assert_close(matrix_of(decoded, D), op.matrix @ w, rtol=0, atol=1e-12)
    v = torch.randn(2, 3, dtype=F64)
    z = torch.randn(2, D, dtype=F64)
    cost = priors.Cost()
    with priors.measure(cost, batch=2):
        g = decoded.vjp(z, v)
    torch.testing.assert_close(g, v @ op.matrix @ w, rtol=0, atol=1e-12)
    assert (cost.decoder, cost.decoder_vjp) == (1.0, 1.0)
    with pytest.raises(ValueError, match="measure the decoded images"):
        guided.Decoded(operators.Inpainting(torch.ones(D + 1, dtype=F64)), autoencoder)


@pytest.mark.parametrize(("zeta", "sigma_y"), [(None, 1.0), (3.0, 0.1)])
def test_latent_dps_decodes_to_pixel_dps_on_the_rotated_prior(zeta, sigma_y):
    """Deterministic DDIM (eta 0), 20 steps, 3 samples: D(latent run) equals the pixel run,
    for the likelihood score and the tapered normalised step."""
    latent, w, _, prior = _setup()
    op = operators.Inpainting(MASK)
    y = _measurement(prior, op, sigma_y)
    z_T = torch.randn(3, D, generator=torch.Generator().manual_seed(3), dtype=F64)
    ts = guided.time_grid(20)
    cost = priors.Cost()
    taper = 0.5 if zeta else 0.0
    method = guided.LatentDPS(op, y, sigma_y, zeta, taper=taper, eta=0.0)
    z = method(prior, z_T, ts, cost=cost)
    pixel = guided.GuidedDenoiser(
        rotated(latent, w), guided.DPS(op, y, sigma_y, zeta, taper=taper)
    )
    x = guided.DDIM(eta=0.0)(pixel, z_T @ w.T, ts)
    torch.testing.assert_close(prior.decode(z), x, rtol=0, atol=1e-9)
    assert (cost.nfe, cost.vjp, cost.decoder, cost.decoder_vjp, cost.encoder) == (
        20,
        20,
        20,
        20,
        0,
    )


def test_psld_gluing_on_inpainting_is_the_dps_residual():
    """With E = W^T and a mask (A+ = A), |z - E(A+y + (I - A+A) D(z))| = |y - A D(z)|: PSLD at
    zeta a and gamma b takes latent DPS's steps at zeta a + b."""
    _, _, _, prior = _setup()
    op = operators.Inpainting(MASK)
    y = _measurement(prior, op)
    g = torch.Generator().manual_seed(4)
    z_T = torch.randn(3, D, generator=g, dtype=F64)
    ts = guided.time_grid(15)
    cost = priors.Cost()
    psld = guided.PSLD(op, y, 0.1, 2.0, gamma=1.5, eta=1.0)
    out = psld(prior, z_T, ts, generator=torch.Generator().manual_seed(5), cost=cost)
    dps = guided.LatentDPS(op, y, 0.1, 3.5, eta=1.0)
    twin = dps(prior, z_T, ts, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, twin, rtol=0, atol=1e-9)
    # one pooled network VJP; a decoder pass and VJP per term; the gluing term's encoder pass
    assert (cost.nfe, cost.vjp, cost.decoder, cost.decoder_vjp) == (15, 15, 30, 30)
    assert (cost.encoder, cost.encoder_vjp) == (15, 15)


def test_latent_daps_samples_near_the_exact_posterior():
    """DAPS's test settings (50 annealing steps, 5 ODE and 100 inner steps, tau = sigma_y, step
    0.001) with the authors' latent dynamics (momentum 0.74, the gradient clip) on the latents
    through a rotation, 2000 samples: along the observed directions the mean within 0.1
    posterior sd of the exact one and the variance 0.9 to 1.2 times the exact (measured: 0.014
    to 0.042 sd, 1.04 to 1.09), where the prior's mean is 10 to 13 sd away on two of them. (With
    momentum 0, plain Langevin, measured 0.14 sd and up to 1.93 times the variance, as pixel
    DAPS on the rotated prior: 0.10 sd, 1.88.)"""
    latent, w, _, prior = _setup()
    g = torch.Generator().manual_seed(6)
    a = torch.randn(3, D, generator=g, dtype=F64)
    op = operators.MatrixOperator(a)
    y = _measurement(prior, op, sigma_y=0.1, seed=7)
    exact = latent.posterior(a @ w, y[0], 0.1)
    z_T = guided.initial_noise(latent.schedule, (2000, D), g, dtype=F64)
    ts = guided.time_grid(50, "karras", schedule=latent.schedule, sigma_min=0.1)
    daps = guided.LatentDAPS(
        op, y, 0.1, tau=0.1, step_size=1e-3, ode_steps=5, langevin_steps=100, decay=0.01,
        sigma_min=0.01,
    )  # fmt: skip
    assert (daps.momentum, daps.clip) == (0.74, 0.5)
    out = daps(prior, z_T, ts, generator=torch.Generator().manual_seed(1))
    basis = torch.linalg.svd(a @ w).Vh[:3].T  # the observed latent directions
    cov = basis.T @ exact.covs[0] @ basis
    sd = cov.diagonal().sqrt()
    error = ((out - exact.means[0]) @ basis).mean(0).abs() / sd
    ratios = (out @ basis).var(0) / cov.diagonal()
    assert error.max() < 0.1 and 0.9 < ratios.min() and ratios.max() < 1.2
    far = ((latent.means[0] - exact.means[0]) @ basis).abs() / sd
    assert int((far > 10).sum()) == 2


def test_latent_daps_without_its_options_is_daps_through_the_decoder():
    _, _, autoencoder, prior = _setup()
    op = operators.Inpainting(MASK)
    y = _measurement(prior, op)
    z_T = torch.randn(2, D, generator=torch.Generator().manual_seed(8), dtype=F64)
    ts = guided.time_grid(6, "karras", schedule=prior.schedule, sigma_min=0.1)
    options = {"tau": 0.1, "step_size": 1e-3, "langevin_steps": 4, "ode_steps": 2, "decay": 0.5}
    latent = guided.LatentDAPS(op, y, 0.1, momentum=0.0, clip=None, **options)
    cost = priors.Cost()
    out = latent(prior, z_T, ts, generator=torch.Generator().manual_seed(9), cost=cost)
    daps = guided.DAPS(guided.Decoded(op, autoencoder), y, 0.1, sigma_min=0.001, **options)
    twin = daps(prior.prior, z_T, ts, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(out, twin, rtol=0, atol=0)
    # each Langevin step decodes once, for its residual and the VJP through it
    assert (cost.nfe, cost.decoder, cost.decoder_vjp) == (6 * 2, 6 * 4, 6 * 4)


def test_damped_hamiltonian_steps_sample_a_gaussian_target():
    """The inner loop with the authors' momentum 0.74 on N(c, rho^2) times a Gaussian
    likelihood (A = a mask): mean and variance of 4000 chains after 1000 steps of 0.003 against
    the closed form (measured: the mean within 0.017, the variance within 4%)."""
    op = operators.Inpainting(MASK)
    y = torch.full((1, D), 0.5, dtype=F64) * MASK
    tau, rho = 0.3, 0.5
    chain = guided.langevin.LangevinLikelihood(op, y, tau, momentum=0.74)
    centre = torch.zeros(4000, D, dtype=F64)
    out = chain.sample(centre, rho, 0.003, 1000, torch.Generator().manual_seed(10))
    precision = 1 / rho**2 + MASK / tau**2
    mean, variance = (MASK * 0.5 / tau**2) / precision, 1 / precision
    torch.testing.assert_close(out.mean(0), mean, rtol=0, atol=0.03)
    torch.testing.assert_close(out.var(0) / variance, torch.ones(D, dtype=F64), rtol=0, atol=0.07)
    # stable below 2 (1 + m) over the curvature, refused above
    curvature = 1 / rho**2 + 1 / tau**2
    chain.check(0.99 * 2 * 1.74 / curvature, rho, centre, "here", "advice")
    with pytest.raises(ValueError, match="must stay below"):
        chain.check(1.01 * 2 * 1.74 / curvature, rho, centre, "here", "advice")


def test_the_data_gradient_clip_bounds_each_entry():
    op = operators.Inpainting(MASK)
    y = torch.full((1, D), 100.0, dtype=F64) * MASK
    chain = guided.langevin.LangevinLikelihood(op, y, 1.0, clip=0.5)
    out = chain.sample(torch.zeros(1, D, dtype=F64), 1e6, 0.1, 1, None)  # noise 0.45 per entry
    free = guided.langevin.LangevinLikelihood(op, y, 1.0)
    unclipped = free.sample(torch.zeros(1, D, dtype=F64), 1e6, 0.1, 1, None)
    assert float(out.abs().max()) < 0.1 * 0.5 + 5 * math.sqrt(0.2)
    assert float(unclipped.abs().max()) > 9  # 0.1 x 100 without the clip


def test_resample_consistency_set_is_the_authors():
    """Every 10th step of the last two thirds, not the final one: at 500 DDIM steps their
    indices 10, 20, ..., 330 (index <= 500 - 500 // 3 = 334)."""
    method = guided.ReSample(operators.Inpainting(MASK), torch.zeros(1, D, dtype=F64), 0.1)
    chosen = [
        500 - 1 - i
        for i in range(500)
        if method.consistent(guided.Step(i, torch.tensor(0.0), torch.tensor(0.0), 1, 0, 1, 0, 500))
    ]
    assert sorted(chosen) == list(range(10, 331, 10))


def test_resample_fits_each_sample_to_its_tolerance():
    """The final consistency fit stops each sample at its tolerance (here 0.05, half the noise
    level), whatever its companions need; the cost counts a decoder pass and VJP per
    iteration of each sample still fitting, and no encoder call."""
    _, _, _, prior = _setup()
    op = operators.Inpainting(MASK)
    g = torch.Generator().manual_seed(11)
    y = torch.cat([_measurement(prior, op, seed=s) for s in (12, 13, 14)])
    z_T = torch.randn(3, D, generator=g, dtype=F64)
    cost = priors.Cost()
    method = guided.ReSample(op, y, 0.1, tolerance=0.05, every=3, iterations=2000, lr=0.05)
    out = method(prior, z_T, guided.time_grid(12), generator=g, cost=cost)
    residual = (op(prior.decode(out)) - y).pow(2).mean(1).sqrt()
    assert float(residual.max()) <= 0.05
    # the passes that find a sample fitted take no VJP: at most one such per sample and fit
    assert 0 < cost.decoder_vjp < cost.decoder and cost.encoder == 0 and cost.nfe == 12

    def run(rows):
        gens = [torch.Generator().manual_seed(100 + r) for r in rows]
        method = guided.ReSample(
            op, y[rows], 0.1, tolerance=0.05, every=3, iterations=2000, lr=0.05
        )
        return method(prior, z_T[rows], guided.time_grid(12), generator=gens)

    torch.testing.assert_close(run([1]), run([0, 1, 2])[1:2], rtol=0, atol=1e-12)


def test_resample_draws_from_the_product_of_gaussians():
    """One consistency step's draw: mean (rho^2 alpha_s z0 + sigma_s^2 z_s') / (rho^2 +
    sigma_s^2) and variance rho^2 sigma_s^2 / (rho^2 + sigma_s^2), rho^2 = gamma x the DDPM
    posterior variance, over 20000 draws."""
    _, _, autoencoder, prior = _setup()
    op = operators.Inpainting(MASK)
    y = _measurement(prior, op)
    method = guided.ReSample(op, y, 0.1, gamma=2.0, every=1, iterations=0)  # z0 = z_hat
    method.bind(autoencoder)
    run = guided.Run(prior, torch.Generator().manual_seed(15), {})
    schedule = prior.schedule
    t, s = torch.tensor(0.6, dtype=F64), torch.tensor(0.5, dtype=F64)
    (a_t, s_t), (a_s, s_s) = schedule(t), schedule(s)
    step = guided.Step(5, t, s, float(a_t), float(s_t), float(a_s), float(s_s), 9)
    assert method.consistent(step)
    x_t = torch.randn(1, D, generator=torch.Generator().manual_seed(16), dtype=F64).expand(
        20000, D
    )
    out = method.step(run, x_t, step, guided.SamplerState())
    z0 = prior(x_t[:1], t)
    z_s = guided.ddim.ddim_update(x_t[:1], z0, *step.coefficients, 0.0, None)
    rho2 = 2.0 * float(s_s) ** 2 * guided.ddim.ancestral_share(*step.coefficients)
    mean = (rho2 * float(a_s) * z0 + float(s_s) ** 2 * z_s) / (rho2 + float(s_s) ** 2)
    variance = rho2 * float(s_s) ** 2 / (rho2 + float(s_s) ** 2)
    torch.testing.assert_close(out.mean(0), mean[0], rtol=0, atol=4 * math.sqrt(variance / 20000))
    torch.testing.assert_close(
        out.var(0), torch.full((D,), variance, dtype=F64), rtol=0.05, atol=0
    )


def test_latent_and_pixel_methods_refuse_the_other_kind_of_prior():
    latent, _, _, prior = _setup()
    op = operators.Inpainting(MASK)
    y = _measurement(prior, op)
    z_T = torch.zeros(1, D, dtype=F64)
    ts = guided.time_grid(3)
    for method in (
        guided.LatentDPS(op, y, 0.1),
        guided.PSLD(op, y, 0.1),
        guided.ReSample(op, y, 0.1),
        guided.LatentDAPS(op, y, 0.1),
    ):
        with pytest.raises(TypeError, match="samples the latents of a priors.LatentPrior"):
            method(latent, z_T, ts)
    wide = priors.LatentPrior(LinearAutoencoder(torch.eye(D + 2, D, dtype=F64)), latent)
    pixel_op = operators.Inpainting(torch.ones(D + 2, dtype=F64))
    pixel = guided.GuidedDenoiser(wide, guided.DPS(pixel_op, torch.zeros(1, D + 2), 0.1))
    with pytest.raises(ValueError, match=r"use a latent method \(guided.LatentDPS"):
        guided.DDPM()(pixel, z_T, ts)
    with pytest.raises(ValueError, match="guided.Decoded"):
        guided.DDRM(pixel_op, torch.zeros(1, D + 2), 0.1)(wide, z_T, ts)
    sensor = operators.SaturatingSensor((D,), gain=1.0)
    with pytest.raises(operators.UnsupportedOperator, match="PSLD needs a LinearOperator"):
        guided.PSLD(sensor, y, 0.1)
    with pytest.raises(ValueError, match="momentum"):
        guided.LatentDAPS(op, y, 0.1, momentum=1.0)
    with pytest.raises(ValueError, match="tolerance"):
        guided.ReSample(op, y, 0.1, tolerance=-1.0)


def test_the_latent_methods_run_where_latents_and_images_differ():
    """4 latents decoded to 6 pixels: every latent method runs, and the run's measurement
    checks see only operators on the latents (A after D), never the pixel operator."""
    latent = gaussian(4, seed=2)
    prior = priors.LatentPrior(LinearAutoencoder(rotation(D)[:, :4]), latent)
    op = operators.Inpainting(MASK)
    y = _measurement(prior, op)
    z_T = torch.randn(2, 4, generator=torch.Generator().manual_seed(17), dtype=F64)
    ts = guided.time_grid(10, "karras", schedule=latent.schedule, sigma_min=0.1)
    for method in (
        guided.LatentDPS(op, y, 0.1, 2.0),
        guided.PSLD(op, y, 0.1, 2.0, gamma=1.0),
        guided.ReSample(op, y, 0.1, every=2, iterations=20),
        guided.LatentDAPS(op, y, 0.1, step_size=1e-4, langevin_steps=3),
    ):
        z = method(prior, z_T, ts, generator=torch.Generator().manual_seed(18))
        assert z.shape == (2, 4) and bool(torch.isfinite(z).all())
        found = guided.measurements(method)
        assert found and all(isinstance(m.op, guided.Decoded) for m in found)
