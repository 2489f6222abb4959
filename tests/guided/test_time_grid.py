"""The ``linear_beta`` time grid: the linear-beta SDE's noise levels at uniform times, mapped to
any schedule, truncated at the schedule's top, refused where its times would coincide."""

import math

import pytest
import torch

import guided
import priors


def _level(u):
    """The linear-beta SDE's noise level (beta from 0.1 to 20), written out independently."""
    return math.sqrt(math.exp(0.1 * u + 0.5 * 19.9 * u * u) - 1)


def _levels(schedule, ts):
    return torch.exp(-schedule.log_snr(ts)).tolist()


@pytest.mark.parametrize("steps", [1, 10, 100])
def test_on_a_schedule_reaching_past_its_top_the_levels_are_the_sdes(steps):
    schedule = priors.CosineSchedule()  # top level 1000 > 152
    ts = guided.time_grid(steps, "linear_beta", schedule=schedule)
    assert ts.dtype == torch.float64 and ts.shape == (steps + 1,) and float(ts[-1]) == 0
    assert bool((ts.diff() < 0).all())
    expected = [_level(1 - i / steps) for i in range(steps)]
    assert _levels(schedule, ts[:-1]) == pytest.approx(expected, rel=1e-6)


def test_on_a_schedule_below_its_top_the_grid_starts_at_the_schedules_top():
    schedule = priors.EDMSchedule()  # top level 80 < 152
    steps = 20
    ts = guided.time_grid(steps, "linear_beta", schedule=schedule)
    assert float(ts[0]) == 1.0 and bool((ts.diff() < 0).all())
    levels = _levels(schedule, ts[:-1])
    assert levels[0] == pytest.approx(80.0, rel=1e-9)
    # u0 with level(u0) = 80, found by bisection here, not by the module's quadratic
    lo, hi = 0.0, 1.0
    for _ in range(80):
        lo, hi = ((lo + hi) / 2, hi) if _level((lo + hi) / 2) < 80 else (lo, (lo + hi) / 2)
    expected = [_level(lo * (1 - i / steps)) for i in range(steps)]
    assert levels == pytest.approx(expected, rel=1e-6)


def test_it_moves_steps_to_large_noise_levels_against_the_uniform_grid():
    schedule = priors.load("digits").schedule
    above = [
        sum(
            level > 10
            for level in _levels(schedule, guided.time_grid(100, kind, schedule=schedule)[:-1])
        )
        for kind in ("uniform", "linear_beta")
    ]
    assert above == [7, 33]  # the figures the module's docstring states


def test_coinciding_times_and_a_missing_schedule_are_refused():
    with pytest.raises(ValueError, match="linear_beta.*schedule"):
        guided.time_grid(10, "linear_beta")
    # the grid's last levels (0.045 at 100 steps) lie below this schedule's smallest
    coarse = priors.EDMSchedule(sigma_min=0.5)
    with pytest.raises(ValueError, match="coincide"):
        guided.time_grid(100, "linear_beta", schedule=coarse)
    assert guided.time_grid(3, "linear_beta", schedule=coarse).diff().lt(0).all()
