import pytest
import torch

from hypothesis import given, settings
from hypothesis import strategies as st

import priors

SPECIAL = st.sampled_from([float("nan"), float("inf"), -float("inf"), 3e38, -3e38, 0.0, 1.0])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 39), SPECIAL), max_size=4),
    st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_all_finite_is_isfinite_all(values, specials, dtype):
    x = torch.tensor(values, dtype=torch.float64)
    for i, v in specials:
        x[i % len(x)] = v
    x = x.to(dtype)  # 3e38 overflows bf16 and float32 sums: the exact check decides
    assert priors.all_finite(x) == bool(torch.isfinite(x).all())


@pytest.mark.parametrize(
    "x, want",
    [
        (torch.full((4,), 3e38), True),  # the float32 sum overflows, the entries are finite
        (torch.tensor([1.0, float("nan")]), False),
        (torch.tensor([float("inf"), -float("inf")]), False),  # the sum is NaN
        (torch.tensor([1 + 1j, complex(float("nan"), 0)]), False),
        (torch.tensor([1 + 1j, 2j]), True),
        (torch.arange(5), True),
        (torch.empty(0), True),
    ],
)
def test_all_finite_cases(x, want):
    assert priors.all_finite(x) is want
