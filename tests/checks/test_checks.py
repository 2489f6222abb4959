"""The shared argument checks: one policy for numbers and tensors."""

import math

import numpy as np
import pytest
import torch

import checks


@pytest.mark.parametrize(
    "value", [1, 0.5, np.float32(0.5), np.float64(2.0), np.int64(3), torch.tensor(0.25)]
)
def test_numbers_of_every_real_kind_are_accepted(value):
    assert checks.number(value, "x") == pytest.approx(float(value))
    assert type(checks.number(value, "x")) is float


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (True, TypeError),
        ("0.1", TypeError),
        (1j, TypeError),
        (None, TypeError),
        (torch.ones(2), TypeError),
        (torch.tensor(1.0, requires_grad=True), TypeError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
        (np.float32("inf"), ValueError),
    ],
)
def test_numbers_of_the_wrong_kind_are_refused_by_name(value, error):
    with pytest.raises(error, match="sigma_y must be a finite number"):
        checks.number(value, "sigma_y")


def test_ranges_name_their_ends():
    with pytest.raises(ValueError, match=r"zeta must be a finite number in \[0, 1\], got 1.5"):
        checks.number(1.5, "zeta", low=0, high=1)
    with pytest.raises(ValueError, match=r"gain must be a finite number > 0, got 0.0"):
        checks.number(0, "gain", low=0, open_low=True)
    assert checks.number(math.inf, "sigma", low=0, infinite=True) == math.inf
    with pytest.raises(ValueError, match="must be a number >= 0"):
        checks.number(math.nan, "sigma", low=0, infinite=True)


def test_integers_refuse_fractions_and_bools():
    assert checks.integer(np.int64(5), "steps", low=1) == 5
    assert checks.integer(4.0, "steps", low=1) == 4
    for bad, error in ((2.7, ValueError), (True, TypeError), ("3", TypeError), (0, ValueError)):
        with pytest.raises(error, match="steps must be an integer"):
            checks.integer(bad, "steps", low=1)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got inf"):
        checks.integer(math.inf, "steps", low=1)


def test_flags_refuse_numbers_and_strings():
    assert checks.flag(np.bool_(True), "adapt") is True
    for bad in (1, "False", None):
        with pytest.raises(TypeError, match="adapt must be True or False"):
            checks.flag(bad, "adapt")


@pytest.mark.parametrize(
    "value", [(-1, 1), [0.0, 2.5], (np.float32(0.5), torch.tensor(1.0)), torch.tensor([0.0, 1.0])]
)
def test_intervals_of_every_real_pair_are_accepted_as_floats(value):
    lo, hi = checks.interval(value, "clip")
    assert (type(lo), type(hi)) == (float, float) and lo < hi
    assert (lo, hi) == (float(value[0]), float(value[1]))


@pytest.mark.parametrize(
    ("value", "kwargs", "error", "match"),
    [
        ("0,1", {}, TypeError, "clip must be a pair"),
        (b"01", {}, TypeError, "clip must be a pair"),
        (1.0, {}, TypeError, "clip must be a pair"),
        (None, {}, TypeError, "clip must be a pair"),
        ((0.0,), {}, TypeError, "clip must be a pair"),
        ((0.0, 1.0, 2.0), {}, TypeError, "clip must be a pair"),
        ((True, 1.0), {}, TypeError, r"clip\[0\]"),
        ((0.0, math.nan), {}, ValueError, r"clip\[1\]"),
        ((-math.inf, 1.0), {}, ValueError, r"clip\[0\]"),
        ((1.0, 0.0), {}, ValueError, "lo < hi"),
        ((0.5, 0.5), {}, ValueError, "lo < hi"),
        ((-0.5, 1.0), {"low": 0}, ValueError, r"clip\[0\] must be a finite number >= 0"),
        ((0.0, 2.0), {"low": 0, "high": 1}, ValueError, r"clip\[1\]"),
        ((math.inf, math.inf), {"infinite": True}, ValueError, "lo < hi"),
    ],
)
def test_intervals_that_are_not_ranges_are_refused_by_name(value, kwargs, error, match):
    with pytest.raises(error, match=match):
        checks.interval(value, "clip", **kwargs)


def test_an_interval_may_reach_infinity_only_where_allowed():
    assert checks.interval((0, math.inf), "interval", low=0, infinite=True) == (0.0, math.inf)
    with pytest.raises(ValueError, match=r"interval\[1\] must be a finite number"):
        checks.interval((0, math.inf), "interval", low=0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, torch.uint8])
def test_tensors_must_be_real_floating(dtype):
    with pytest.raises(TypeError, match=f"y must be a real floating tensor.*got {dtype}"):
        checks.real_tensor(torch.zeros(2, dtype=dtype), "y")


def test_half_precision_only_where_supported_and_no_meta_tensors():
    checks.real_tensor(torch.zeros(2, dtype=torch.bfloat16), "x")
    with pytest.raises(TypeError, match=r"\(float64, float32\)"):
        checks.real_tensor(torch.zeros(2, dtype=torch.float16), "x", half=False)
    with pytest.raises(ValueError, match="meta"):
        checks.real_tensor(torch.zeros(2, device="meta"), "x")
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(0 NaN, 1 infinite of 2\)"):
        checks.finite(torch.tensor([1.0, math.inf]), "x")
    with pytest.raises(FloatingPointError, match=r"\(1 NaN, 1 infinite of 2\)"):
        checks.finite(torch.tensor([math.nan, math.inf]), "A(x)", FloatingPointError)
