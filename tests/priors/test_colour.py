"""A grey prior on colour images: both wrappers give the exact posterior mean of the colour
prior they imply, checked with a Gaussian grey prior whose posterior mean is known."""

import math

import pytest
import torch

import priors

from priors.colour import OPPONENT


class GaussianPixels(priors.Denoiser):
    """Every pixel independent N(0, s^2): the exact posterior mean, on images of any size."""

    def __init__(self, s: float, schedule: priors.Schedule | None = None, shape=(1, 8, 8)) -> None:
        super().__init__(schedule or priors.CosineSchedule())
        self.s2 = s * s
        self.shape = shape

    def forward(self, x_t, t):
        view = (-1, *[1] * (x_t.ndim - 1))
        alpha, sigma = (c.to(x_t.dtype).view(view) for c in self.schedule(t))
        return alpha * self.s2 * x_t / (alpha**2 * self.s2 + sigma**2)


def _exact(cov, x_t, t, schedule):
    """E[x | x_t] per pixel for x ~ N(0, cov) (3x3) in colour."""
    alpha, sigma = (float(c) for c in schedule(t))
    gain = (
        alpha * cov @ torch.linalg.inv(alpha**2 * cov + sigma**2 * torch.eye(3, dtype=cov.dtype))
    )
    return torch.einsum("kc,bchw->bkhw", gain, x_t)


@pytest.mark.parametrize(
    ("schedule", "t"),
    [("cosine", 0.1), ("cosine", 0.4), ("cosine", 0.7), ("rectified", 0.3), ("rectified", 0.9),
     ("rectified", 1.0)],
)  # fmt: skip
def test_luma_chroma_is_the_exact_posterior_mean_of_its_colour_prior(schedule, t):
    """Also on the rectified schedule, at pure noise (t = 1) included."""
    s = 0.4
    kind = priors.CosineSchedule if schedule == "cosine" else priors.RectifiedSchedule
    wrapped = priors.LumaChroma(GaussianPixels(s, kind()))
    x_t = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # the luminance's mean m ~ N(0, s^2), so z_0 = sqrt(3) m ~ N(0, 3 s^2); chroma N(0, s^2)
    variances = torch.tensor([3 * s * s, s * s, s * s], dtype=torch.float64)
    cov = OPPONENT.T @ torch.diag(variances) @ OPPONENT
    expected = _exact(cov, x_t, torch.tensor(t), wrapped.schedule)
    torch.testing.assert_close(wrapped(x_t, torch.tensor(t)), expected, rtol=1e-9, atol=1e-9)


def test_per_channel_is_the_exact_posterior_mean_of_independent_channels():
    s, t = 0.4, torch.tensor([0.2, 0.6])
    wrapped = priors.PerChannel(GaussianPixels(s))
    x_t = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for row in range(2):
        expected = _exact(s * s * torch.eye(3, dtype=torch.float64), x_t[row : row + 1],
                          t[row], wrapped.schedule)  # fmt: skip
        torch.testing.assert_close(wrapped(x_t, t)[row : row + 1], expected)


def test_the_opponent_transform_is_orthonormal():
    torch.testing.assert_close(OPPONENT @ OPPONENT.T, torch.eye(3, dtype=torch.float64))
    assert math.isclose(float(OPPONENT[0].sum()), math.sqrt(3))


def test_shapes_and_bad_input():
    wrapped = priors.PerChannel(GaussianPixels(0.5))
    assert wrapped.shape == (3, 8, 8) and wrapped.schedule is wrapped.prior.schedule
    with pytest.raises(ValueError, match=r"x_t must have 3 channels"):
        wrapped(torch.zeros(1, 1, 8, 8), torch.tensor(0.5))
    with pytest.raises(ValueError, match="one-channel prior"):
        priors.PerChannel(GaussianPixels(0.5, shape=(2, 8)))
    with pytest.raises(ValueError, match="channels"):
        priors.PerChannel(GaussianPixels(0.5, shape=(1, 8)), channels=0)
    with pytest.raises(ValueError, match="grey-level image prior"):
        mixture = priors.GaussianMixture(
            torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None], priors.CosineSchedule()
        )
        priors.LumaChroma(mixture)


def test_per_channel_stacks_independent_sources_of_a_signal_prior():
    """K sources (B, K, T) from a one-source prior (1, T): each source's exact posterior
    mean, one network evaluation per source and row."""
    scales = 0.3
    wrapped = priors.PerChannel(GaussianPixels(scales, shape=(1, 16)), channels=4)
    assert wrapped.shape == (4, 16)
    x_t = torch.randn(3, 4, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9])
    alpha, sigma = (c.view(-1, 1, 1) for c in wrapped.schedule(t))
    expected = alpha * scales**2 * x_t / (alpha**2 * scales**2 + sigma**2)
    cost = priors.Cost()
    with priors.measure(cost, batch=3):
        out = wrapped(x_t, t)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert cost.nfe == 4
