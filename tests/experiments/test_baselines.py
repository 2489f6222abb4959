"""The classical baselines: exact where the maths is exact (interpolation of a linear ramp,
bicubic of a constant), better than the pseudo-inverse where they regularise (TV, PnP-BM3D,
the patch GMM), and refused where they do not apply."""

import pytest
import torch

import operators
import priors

from experiments.shared.baselines import BASELINES, applies, run_baseline
from experiments.shared.fills import interpolate
from experiments.shared.metrics import psnr
from experiments.shared.patch_gmm import epll, fit_patch_gmm
from experiments.shared.photographs import Photographs


def _crop(side=32):
    """A training crop (never a held-out photograph) in [-1, 1]."""
    return Photographs("train", crop=side).evaluation()[0][40:41].double()


def _measure(op, x, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    return operators.GaussianNoise(sigma)(op(x), g)


def test_linear_interpolation_restores_a_ramp_exactly():
    ramp = torch.linspace(-1, 1, 24, dtype=torch.float64)
    x = (0.5 * ramp[:, None] + 0.3 * ramp[None, :])[None, None]
    g = torch.Generator().manual_seed(1)
    mask = operators.random_pixel_mask(24, 24, 0.5, g)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 1  # the hull is the image
    op = operators.Inpainting(mask, (1, 24, 24))
    torch.testing.assert_close(interpolate(op, op(x), 0.0), x)


def test_bicubic_keeps_a_constant_image():
    op = operators.AveragePoolSR((1, 16, 16), 4)
    x = torch.full((2, 1, 16, 16), 0.25, dtype=torch.float64)
    torch.testing.assert_close(interpolate(op, op(x), 0.0), x)


@pytest.mark.parametrize(
    ("name", "settings"),
    [("tv", {"lam": 0.02}), ("pnp_bm3d", {}), ("patch_gmm", {"lam": 1.0})],
)
def test_regularised_baselines_beat_the_pseudo_inverse(name, settings):
    x = _crop()
    op = operators.Inpainting(
        operators.random_pixel_mask(32, 32, 0.5, torch.Generator().manual_seed(0)), (1, 32, 32)
    )
    y = _measure(op, x, 0.05)
    if name == "patch_gmm":
        settings = settings | {"gmm": fit_patch_gmm(patch=4, components=3, samples=3000)}
    restored = run_baseline(name, op, y, 0.05, settings)
    assert restored.shape == x.shape and torch.isfinite(restored).all()
    gain = psnr(restored, x) - psnr(BASELINES["pinv"](op, y, 0.05), x)
    assert float(gain) > 3.0  # dB; the pseudo-inverse leaves half the pixels grey


def test_the_patch_gmm_denoises_without_a_measurement_operator_blur():
    """On pure denoising (A = I through a full mask) the EPLL step must lower the error."""
    x = _crop()
    op = operators.Inpainting(torch.ones(32, 32), (1, 32, 32))
    y = _measure(op, x, 0.1)
    gmm = fit_patch_gmm(patch=4, components=3, samples=3000)
    assert float(psnr(epll(op, y, 0.1, gmm=gmm), x)) > float(psnr(y, x)) + 1.0


def test_what_does_not_apply_is_refused():
    blur = operators.CircularBlur(operators.gaussian_kernel(1.0, size=5), (1, 16, 16))
    assert not applies("interpolate", blur) and applies("tv", blur)
    with pytest.raises(operators.UnsupportedOperator, match="interpolation needs"):
        interpolate(blur, torch.zeros(1, 1, 16, 16), 0.0)
    with pytest.raises(ValueError, match="baseline must be one of"):
        run_baseline("wiener", blur, torch.zeros(1, 1, 16, 16), 0.0, {})
    with pytest.raises(ValueError, match="lam"):
        run_baseline("tv", blur, torch.zeros(1, 1, 16, 16), 0.0, {"lam": -1.0})


def test_pnp_bm3d_deblurs_from_the_adjoint_not_the_pseudo_inverse():
    """On Gaussian deblurring the pseudo-inverse amplifies the noise (it scored about 5 dB
    on 128x128 crops at sigma_y = 0.01); the iterative baselines start from A^T y instead,
    and PnP-BM3D then improves on the blurred measurement itself."""
    from experiments.shared.fills import initial

    x = _crop(64)
    op = operators.CircularBlur(operators.gaussian_kernel(1.0, size=7), (1, 64, 64))
    y = _measure(op, x, 0.01)
    torch.testing.assert_close(initial(op, y, 0.01), op.adjoint(y).clamp(-1, 1))
    blurred = float(psnr(y, x))
    assert float(psnr(BASELINES["pinv"](op, y, 0.01), x)) < blurred - 10
    assert float(psnr(run_baseline("pnp_bm3d", op, y, 0.01, {}), x)) > blurred + 1.0


class _WhiteGaussian(priors.Denoiser):
    """x ~ N(0, v I) in [-1, 1] units: E[x | x_t] = alpha v x_t / (alpha^2 v + sigma^2)."""

    def __init__(self, v):
        super().__init__(priors.CosineSchedule())
        self.v = v

    def forward(self, x_t, t, **cond):
        alpha, sigma = (c.to(x_t.dtype) for c in self.schedule(t))
        return alpha * self.v * x_t / (alpha**2 * self.v + sigma**2)


def test_pnp_prior_is_pnp_bm3ds_loop_with_the_priors_denoiser_in_01_units():
    """With a white Gaussian prior the one-step denoiser is the Wiener gain: on [0, 1]
    images at level s it maps x to (g (2x - 1) + 1) / 2 with g = v / (v + (2 s)^2). PnP with
    the prior must equal the shared loop with that closed form (the factor 2 of the units)."""
    from experiments.shared.baselines import pnp_hqs

    x = _crop()
    op = operators.Inpainting(
        operators.random_pixel_mask(32, 32, 0.5, torch.Generator().manual_seed(0)), (1, 32, 32)
    )
    y = _measure(op, x, 0.05)
    v = 0.3

    def wiener01(z, level):
        gain = v / (v + (2 * level) ** 2)
        return (gain * (2 * z - 1) + 1) / 2

    expected = pnp_hqs(op, y, 0.05, wiener01, scale=2.0, iterations=5)
    got = run_baseline(
        "pnp_prior", op, y, 0.05, {"scale": 2.0, "iterations": 5}, _WhiteGaussian(v)
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="baseline 'pnp_prior' needs the prior: pass prior="):
        run_baseline("pnp_prior", op, y, 0.05, {})


def test_pnp_prior_shares_pnp_bm3ds_tuned_settings():
    from experiments.shared.baselines import settings_for

    catalogue = {"pnp_bm3d": {"sr4": {0.01: {"scale": 4.0}, 0.05: {"scale": 0.25}}}}
    assert settings_for(catalogue, "pnp_prior", "sr4", 0.04) == {"scale": 0.25}
    with pytest.raises(ValueError, match="has no tuned settings for task 'box'"):
        settings_for(catalogue, "pnp_prior", "box", 0.01)
