"""Timing and peak memory: the one way apps measure them."""

import sys
import time

import numpy as np
import pytest

from experiments.shared.timing import peak_memory, timed, timed_pair


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_sees_a_temporary_allocation_and_not_the_past():
    big = np.ones(30_000_000)  # 229 MiB, freed before the next call
    del big
    out, peak = peak_memory(lambda: float(np.ones(10_000_000).sum()))  # 76 MiB
    assert out == 1e7 and 60 < peak < 120
    assert peak_memory(lambda: 1)[1] < 20


def test_timed_pair_alternates_and_returns_medians():
    calls = []
    fast = lambda: calls.append("a")  # noqa: E731
    slow = lambda: (calls.append("b"), time.sleep(0.01))  # noqa: E731
    a, b = timed_pair(fast, slow, 3)
    assert calls == ["a", "b"] * 4 and a < b and b >= 0.01
    calls.clear()
    timed_pair(fast, slow, 2, warm_up=False)
    assert calls == ["a", "b"] * 2
    with pytest.raises(ValueError, match="repeats"):
        timed_pair(fast, slow, 0)
    with pytest.raises(ValueError, match="repeats"):
        timed(fast, 0)
