"""DPS's tapered step: the taper is the signal fraction of x_t, per row, and needs the
normalised step (that one step size carries across budgets is measured on digits in
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


@pytest.mark.parametrize("t", [torch.tensor(0.3), torch.tensor([0.05, 0.6, 0.999])])
def test_the_taper_is_the_signal_fraction_of_x_t_per_row(t):
    op, prior, y = _problem()
    x_t = torch.randn(3, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    x_hat = prior(x_t, t)
    plain = guided.DPS(op, y, 0.05, zeta=3.0).vector(x_t, t, x_hat, prior.schedule)
    tapered = guided.DPS(op, y, 0.05, zeta=3.0, taper=True).vector(x_t, t, x_hat, prior.schedule)
    alpha, sigma = prior.schedule(t)
    w = (alpha**2 / (alpha**2 + sigma**2)).expand(3)
    assert float(w.min()) < 0.99  # the check below is not trivially w = 1
    torch.testing.assert_close(tapered, plain * w[:, None], rtol=1e-12, atol=0)


def test_the_taper_needs_a_normalised_step():
    op, _, y = _problem()
    with pytest.raises(ValueError, match="taper weights the normalised step"):
        guided.DPS(op, y, 0.05, zeta=None, taper=True)
    with pytest.raises(TypeError, match="taper must be True or False"):
        guided.DPS(op, y, 0.05, zeta=1.0, taper=1)
