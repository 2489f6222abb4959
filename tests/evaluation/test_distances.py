"""The Fréchet distance against its closed forms and scipy's matrix square root."""

import numpy as np
import pytest
import scipy.linalg
import torch

from evaluation import frechet_distance


def test_closed_forms():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64) @ torch.randn(
        6, 6, generator=g, dtype=torch.float64
    )
    assert abs(frechet_distance(x, x)) < 1e-8
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0, 3.0], dtype=torch.float64)
    assert frechet_distance(x + shift, x) == pytest.approx(float(shift.square().sum()), rel=1e-8)
    a, b = torch.randn(400, 1, generator=g), 3 * torch.randn(300, 1, generator=g) + 1
    expected = (a.mean() - b.mean()) ** 2 + (a.double().std() - b.double().std()) ** 2
    assert frechet_distance(a, b) == pytest.approx(float(expected), rel=1e-6)


def test_matches_scipy_sqrtm():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64)
    y = (
        torch.randn(200, 5, generator=g, dtype=torch.float64)
        @ torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
        + 0.3
    )
    c1, c2 = np.cov(x.numpy().T), np.cov(y.numpy().T)
    reference = float(
        np.sum((x.numpy().mean(0) - y.numpy().mean(0)) ** 2)
        + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    )
    assert frechet_distance(x, y) == pytest.approx(reference, rel=1e-8)


def test_bad_input():
    with pytest.raises(ValueError, match="same F"):
        frechet_distance(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.zeros(1, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(torch.full((3, 2), float("nan")), torch.zeros(3, 2))
