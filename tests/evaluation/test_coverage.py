"""Interval coverage: exact draws cover about (n - 1) level / (n + 1); too narrow samples
cover less and too wide ones more; one reference value per quantity works; bad input is
refused."""

import pytest
import torch

from evaluation import interval_coverage

F64 = torch.float64


def test_exact_draws_cover_the_level_up_to_the_finite_sample_shrinkage():
    """1000 draws against 2000 reference draws of a unit Gaussian in 200 quantities: 0.5 and
    0.9 within 0.01 (expected (n - 1) level / (n + 1): 0.499, 0.898); 16 draws against one
    truth each in 20000 quantities: 0.45 and 0.81 within 0.02 (expected 0.44, 0.79)."""
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(1000, 200, generator=g, dtype=F64)
    truth = torch.randn(2000, 200, generator=g, dtype=F64)
    assert float(interval_coverage(samples, truth, 0.5).mean()) == pytest.approx(0.5, abs=0.01)
    assert float(interval_coverage(samples, truth, 0.9).mean()) == pytest.approx(0.9, abs=0.01)
    pixels = torch.randn(16, 100, 200, generator=g, dtype=F64)
    one = torch.randn(100, 200, generator=g, dtype=F64)
    covered = interval_coverage(pixels, one, 0.9)
    assert covered.shape == (100, 200)
    assert float(covered.mean()) == pytest.approx(0.81, abs=0.02)
    assert float(interval_coverage(pixels, one, 0.5).mean()) == pytest.approx(0.45, abs=0.02)


def test_overconfident_samples_cover_less_and_wide_ones_more():
    """Samples with half the spread cover 0.59 of a central 90% (2 Phi(0.82) - 1), with twice
    the spread 0.999 (2 Phi(3.29) - 1)."""
    g = torch.Generator().manual_seed(1)
    truth = torch.randn(4000, 50, generator=g, dtype=F64)
    base = torch.randn(4000, 50, generator=g, dtype=F64)
    narrow = float(interval_coverage(0.5 * base, truth, 0.9).mean())
    wide = float(interval_coverage(2.0 * base, truth, 0.9).mean())
    assert narrow == pytest.approx(0.59, abs=0.02)
    assert wide == pytest.approx(0.999, abs=0.002)


def test_bad_input_is_refused():
    s = torch.zeros(8, 3, dtype=F64)
    with pytest.raises(ValueError, match="level"):
        interval_coverage(s, s, 1.0)
    with pytest.raises(ValueError, match="level"):
        interval_coverage(s, s, float("nan"))
    with pytest.raises(ValueError, match="samples"):
        interval_coverage(torch.zeros(1, 3, dtype=F64), s, 0.5)
    with pytest.raises(ValueError, match="truth"):
        interval_coverage(s, torch.zeros(4, 2, dtype=F64), 0.5)
    with pytest.raises(TypeError, match="floating"):
        interval_coverage(s.long(), s, 0.5)
    bad = s.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="samples.*NaN or Inf"):
        interval_coverage(bad, s, 0.5)
