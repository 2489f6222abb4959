"""ArrayDPS: every call re-estimates the filters from the denoised sources (pooled over the
rows) and returns the reconstruction direction through the network, normalised to RMS
xi / sigma_t per row; with estimate=False the filters stay as given; EM takes the same
estimator as its M-step; bad input is refused early."""

import math

import pytest
import torch

import guided
import operators
import priors

F64 = torch.float64


class GaussianSamples(priors.Denoiser):
    """Every sample independent N(0, s^2) (one channel): the exact posterior mean."""

    def __init__(self, s, length):
        super().__init__(priors.CosineSchedule())
        self.s2, self.shape = s * s, (1, length)

    def forward(self, x_t, t):
        alpha, sigma = (c.to(x_t.dtype).view(-1, *[1] * (x_t.ndim - 1)) for c in self.schedule(t))
        return alpha * self.s2 * x_t / (alpha**2 * self.s2 + sigma**2)


def _problem(rows=2, length=512):
    g = torch.Generator().manual_seed(0)
    op = operators.ConvolutiveTransfer(2, 3, length, n_fft=64, hop=16, taps=2)
    truth = torch.randn(2, 3, 33, 2, 2, generator=g, dtype=F64)  # a random mixing
    mixing = operators.ConvolutiveTransfer(2, 3, length, n_fft=64, hop=16, taps=2, filters=truth)
    y = mixing(0.3 * torch.randn(1, 2, length, generator=g, dtype=F64))
    x_t = torch.randn(rows, 2, length, generator=g, dtype=F64)
    return op, y, x_t


@pytest.mark.parametrize("t", [0.3, 0.8])
def test_the_term_is_the_normalised_reconstruction_direction_with_refitted_filters(t):
    op, y, x_t = _problem()
    prior = priors.PerChannel(GaussianSamples(0.3, 512), 2)
    term = guided.ArrayDPS(op, y, xi=1.7)
    t = torch.tensor(t, dtype=F64)
    x = x_t.clone().requires_grad_(True)
    x_hat = prior(x, t)
    g = term(x, t, x_hat, prior.schedule)
    assert term.fits == 1
    # the filters are the FCP fit of the denoised sources, rows pooled
    expected = operators.ConvolutiveTransfer(2, 3, 512, n_fft=64, hop=16, taps=2)
    expected.fit(x_hat.detach(), y.expand(2, 3, 512))
    torch.testing.assert_close(op.filters, expected.filters)
    # the direction: J^T A^T (y - A x_hat), which for this prior's diagonal Jacobian is
    # a scaled A^T residual, normalised to RMS xi / sigma_t per row
    alpha, sigma = (float(c) for c in prior.schedule(t))
    jacobian = alpha * 0.09 / (alpha**2 * 0.09 + sigma**2)
    u = jacobian * op.apply_adjoint(y - op(x_hat.detach()))
    rms = u.flatten(1).square().mean(1).sqrt()
    torch.testing.assert_close(g, 1.7 * u / (rms.view(-1, 1, 1) * sigma), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(
        g.flatten(1).square().mean(1).sqrt(), torch.full((2,), 1.7 / sigma, dtype=F64)
    )


def test_known_filters_stay_and_the_guided_sampler_fits_the_mixture():
    """With estimate=False (the oracle) the filters are never touched; with the true filters
    the guided DDPM run ends much closer to the mixture than the unguided one."""
    g = torch.Generator().manual_seed(1)
    truth = torch.randn(2, 3, 33, 2, 2, generator=g, dtype=F64) / 2
    op = operators.ConvolutiveTransfer(2, 3, 512, n_fft=64, hop=16, taps=2, filters=truth)
    y = op(0.3 * torch.randn(1, 2, 512, generator=g, dtype=F64))
    prior = priors.PerChannel(GaussianSamples(0.3, 512), 2)
    term = guided.ArrayDPS(op, y, xi=1.0, estimate=False)
    x_T = guided.initial_noise(prior.schedule, (1, 2, 512), torch.Generator().manual_seed(2))
    ts = guided.time_grid(30)
    runs = {}
    for name, denoiser in (("guided", guided.GuidedDenoiser(prior, term)), ("free", prior)):
        runs[name] = guided.DDPM()(denoiser, x_T, ts, generator=torch.Generator().manual_seed(3))
    assert term.fits == 0
    torch.testing.assert_close(torch.view_as_complex(op.filters), torch.view_as_complex(truth))

    def misfit(x):
        with torch.no_grad():
            return float((op(x) - y).square().mean() / y.square().mean())

    assert misfit(runs["guided"]) < 0.1 * misfit(runs["free"])


def test_em_takes_the_joint_fit_as_its_m_step():
    op, y, x_t = _problem(rows=1)
    prior = priors.PerChannel(GaussianSamples(0.3, 512), 2)
    em = guided.ExpectationMaximization(
        op, y, 0.01, term=guided.DPS, m_step=guided.FitMStep(joint=True), zeta=1.0
    )
    t = torch.tensor(0.5, dtype=F64)
    x = x_t.clone().requires_grad_(True)
    x_hat = prior(x, t)
    em.vector(x, t, x_hat, prior.schedule)
    expected = operators.ConvolutiveTransfer(2, 3, 512, n_fft=64, hop=16, taps=2)
    expected.fit(x_hat.detach(), y, joint=True)
    torch.testing.assert_close(op.filters, expected.filters)
    assert len(em.trace) == 1


def test_bad_input_is_refused():
    op, y, _ = _problem()
    blur = operators.BlindBlur((1, 8, 8), kernel_size=3)
    with pytest.raises(TypeError, match="UnknownOperator"):
        guided.ArrayDPS(operators.Inpainting(torch.ones(2, 512)), torch.zeros(2, 512), 1.0)
    with pytest.raises(TypeError, match="no fit method"):
        guided.ArrayDPS(blur, torch.zeros(1, 8, 8), 1.0)
    with pytest.raises(TypeError, match="no fit method"):
        guided.ExpectationMaximization(blur, torch.zeros(1, 8, 8), 0.1, m_step=guided.FitMStep())
    with pytest.raises(ValueError, match="one mixture"):
        guided.ArrayDPS(op, y.expand(2, 3, 512), 1.0)
    for xi in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="xi"):
            guided.ArrayDPS(op, y, xi)
    with pytest.raises(TypeError, match="m_step"):
        guided.ArrayDPS(op, y, 1.0, m_step="fcp")
    with pytest.raises(ValueError, match="y"):
        guided.ArrayDPS(op, torch.full_like(y, math.inf), 1.0)
    with pytest.raises(TypeError, match="estimate"):
        guided.ArrayDPS(op, y, 1.0, estimate="yes")
