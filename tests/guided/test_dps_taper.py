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
