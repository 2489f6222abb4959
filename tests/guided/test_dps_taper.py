"""DPS's tapered step: the taper is a power of the signal fraction of x_t, per row, and needs
the normalised step (that one step size carries across budgets is measured on digits in
``tests/experiments/test_dps_budgets.py``)."""

import pytest
import torch

import guided
import operators
import priors

F64 = torch.float64


def _problem():
    op = operators.MatrixOperator(
        torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    )
    mean = torch.zeros(5, dtype=F64)
    prior = priors.GaussianMixture(
        torch.ones(1), mean[None], torch.eye(5, dtype=F64)[None], priors.CosineSchedule()
    )
    y = torch.randn(1, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    return op, prior, y


@pytest.mark.parametrize("p", [1.0, 0.5, 2])
@pytest.mark.parametrize("t", [torch.tensor(0.3), torch.tensor([0.05, 0.6, 0.999])])
def test_the_taper_is_a_power_of_the_signal_fraction_of_x_t_per_row(t, p):
    op, prior, y = _problem()
    x_t = torch.randn(3, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    x_hat = prior(x_t, t)
    plain = guided.DPS(op, y, 0.05, zeta=3.0).vector(x_t, t, x_hat, prior.schedule)
    tapered = guided.DPS(op, y, 0.05, zeta=3.0, taper=p).vector(x_t, t, x_hat, prior.schedule)
    alpha, sigma = prior.schedule(t)
    w = (alpha**2 / (alpha**2 + sigma**2)).expand(3)
    assert float(w.min()) < 0.99  # the check below is not trivially w = 1
    torch.testing.assert_close(tapered, plain * w[:, None] ** p, rtol=1e-12, atol=0)
    untapered = guided.DPS(op, y, 0.05, zeta=3.0, taper=0.0)
    torch.testing.assert_close(untapered.vector(x_t, t, x_hat, prior.schedule), plain)


def test_the_taper_needs_a_normalised_step():
    op, _, y = _problem()
    with pytest.raises(ValueError, match="taper weights the normalised step"):
        guided.DPS(op, y, 0.05, zeta=None, taper=1.0)
    guided.DPS(op, y, 0.05, zeta=None, taper=0.0)  # no taper: the likelihood score is fine


@pytest.mark.parametrize(
    ("taper", "error"),
    [
        (True, TypeError),
        ("1", TypeError),
        (-0.5, ValueError),
        (float("inf"), ValueError),
        (float("nan"), ValueError),
    ],
)
def test_a_taper_that_is_not_a_finite_exponent_at_least_0_is_refused(taper, error):
    op, _, y = _problem()
    with pytest.raises(error, match="taper must be a finite number >= 0"):
        guided.DPS(op, y, 0.05, zeta=1.0, taper=taper)


def test_the_clip_clamps_the_estimate_and_stops_the_guidance_at_clamped_pixels():
    """With ``clip`` the term is the unclipped term of the clamped estimate, zero at the
    pixels the clamp moved (its derivative there); a clip wider than the estimate is none."""
    op, prior, y = _problem()
    t = torch.tensor([0.2, 0.5, 0.9])
    x_t = 3 * torch.randn(3, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    x_hat = prior(x_t, t)
    lo, hi = -0.5, 0.5
    inside = (x_hat >= lo) & (x_hat <= hi)
    assert bool(inside.any()) and not bool(inside.all())  # both kinds of pixel are checked
    clipped = guided.DPS(op, y, 0.05, zeta=3.0, clip=(lo, hi)).vector(
        x_t, t, x_hat, prior.schedule
    )
    plain = guided.DPS(op, y, 0.05, zeta=3.0).vector(x_t, t, x_hat.clamp(lo, hi), prior.schedule)
    torch.testing.assert_close(clipped, plain * inside, rtol=1e-12, atol=0)
    assert bool((clipped[~inside] == 0).all()) and bool((clipped[inside] != 0).all())
    wide = guided.DPS(op, y, 0.05, zeta=3.0, clip=(-1e6, 1e6)).vector(
        x_t, t, x_hat, prior.schedule
    )
    unclipped = guided.DPS(op, y, 0.05, zeta=3.0).vector(x_t, t, x_hat, prior.schedule)
    torch.testing.assert_close(wide, unclipped, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("clip", "error", "match"),
    [
        ((1.0, -1.0), ValueError, "lo < hi"),
        ((0.5, 0.5), ValueError, "lo < hi"),
        ((-1.0, float("nan")), ValueError, r"clip\[1\]"),
        ((float("-inf"), 1.0), ValueError, r"clip\[0\]"),
        ((-1.0,), TypeError, "pair"),
        ("-1,1", TypeError, "pair"),
        (1.0, TypeError, "pair"),
        ((True, 1.0), TypeError, r"clip\[0\]"),
    ],
)
def test_a_clip_that_is_not_a_finite_range_is_refused(clip, error, match):
    op, _, y = _problem()
    with pytest.raises(error, match=match):
        guided.DPS(op, y, 0.05, zeta=1.0, clip=clip)
