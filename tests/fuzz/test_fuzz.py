"""Fuzzing the public entries (hypothesis): whatever the shapes, values and settings, a call
either returns finite values or raises one of our clear errors (ValueError, TypeError,
FloatingPointError raised by this package's own code), never a torch error from deep inside
and never a silent NaN."""

import math
import traceback

from pathlib import Path

import pytest
import torch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guided
import operators
import priors

ROOT = Path(__file__).resolve().parents[2]
OURS = tuple(
    str(ROOT / package) for package in ("checks", "priors", "operators", "guided", "experiments")
)
OPERATORS = operators.examples()
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip


def _ours(error: BaseException) -> bool:
    """Whether the error is one of ours: a clear type, raised in this package's code."""
    if not isinstance(error, ValueError | TypeError | FloatingPointError):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(OURS)


def _call(f):
    """Runs ``f``; a result must be finite, an error must be ours."""
    try:
        out = f()
    except Exception as error:  # noqa: BLE001 (the point of the test)
        assert _ours(error), "".join(traceback.format_exception(error))
        return None
    if isinstance(out, torch.Tensor):
        assert bool(torch.isfinite(out).all()), "a silent NaN or Inf"
    return out


values = st.sampled_from([0.0, 1.0, -3.0, 0.5, math.nan, math.inf])


@FUZZ
@given(
    name=st.sampled_from(sorted(OPERATORS)),
    batch=st.integers(0, 3),
    shape_change=st.sampled_from(["same", "drop", "extra", "grow"]),
    poison=values,
)
def test_operators_take_any_input(name, batch, shape_change, poison):
    op, shape = OPERATORS[name]
    shape = {
        "same": shape, "drop": shape[1:], "extra": (*shape, 2),
        "grow": (shape[0] + 1, *shape[1:]),
    }[shape_change]  # fmt: skip
    x = torch.rand(batch, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if x.numel():
        x.view(-1)[0] = poison
    if not bool(torch.isfinite(x).all()):  # a NaN input must be refused, not propagated
        with pytest.raises((ValueError, FloatingPointError)) as caught:
            op(x)
        assert _ours(caught.value)
        return
    _call(lambda: op(x))


SAMPLERS = {
    "ddpm": guided.DDPM, "ddim": guided.DDIM, "dpm_solver": guided.DPMSolver,
    "heun": guided.Heun,
}  # fmt: skip


@FUZZ
@given(
    sampler=st.sampled_from(sorted(SAMPLERS)),
    steps=st.integers(-1, 6),
    rule=st.sampled_from(["dps", "pigdm", "ddrm", "cfg_free"]),
    scale=values,
    sigma_y=st.sampled_from([0.0, 0.1, -0.1, math.nan]),
    y_rows=st.sampled_from([1, 2, 3]),
    y_poison=st.booleans(),
)
def test_guided_sampling_takes_any_setting(sampler, steps, rule, scale, sigma_y, y_rows, y_poison):
    d = 4
    prior = priors.GaussianMixture(
        torch.tensor([0.5, 0.5], dtype=torch.float64),
        torch.tensor([[1.0] * d, [-1.0] * d], dtype=torch.float64),
        torch.eye(d, dtype=torch.float64).expand(2, d, d) * 0.2,
        priors.CosineSchedule(),
    )
    op = operators.MatrixOperator(torch.eye(2, d, dtype=torch.float64))
    y = torch.ones(y_rows, 2, dtype=torch.float64)
    if y_poison:
        y[0, 0] = math.nan

    def run():
        ts = guided.time_grid(steps)
        x_T = guided.initial_noise(prior.schedule, (2, d), torch.Generator(), dtype=torch.float64)
        if rule == "ddrm":
            return guided.DDRM(op, y, sigma_y)(prior, x_T, ts)
        term = {
            "dps": lambda: guided.DPS(op, y, sigma_y, zeta=scale),
            "pigdm": lambda: guided.PiGDM(op, y, sigma_y, weight=scale),
            "cfg_free": lambda: guided.DPS(op, y, sigma_y, zeta=scale),
        }[rule]()
        return SAMPLERS[sampler]()(guided.GuidedDenoiser(prior, term), x_T, ts)

    _call(run)


def _denoisers():
    torch.manual_seed(0)
    mlp = priors.MLPDenoiser(
        priors.MLP(2, width=8, blocks=1, conditions={"state": 3}), priors.CosineSchedule()
    )
    unet = priors.UNetDenoiser(
        priors.UNet(1, channels=(4, 8), attention=(False, False)),
        priors.CosineSchedule(),
        (1, 8, 8),
    )
    return {"mlp": (mlp, (2,), {"state": torch.zeros(1, 3)}), "unet": (unet, (1, 8, 8), {})}


DENOISERS = _denoisers()


@FUZZ
@given(
    name=st.sampled_from(sorted(DENOISERS)),
    t=st.sampled_from([0.0, 0.5, 1.0, -0.1, 1.5, math.nan, "rows", "wrong_rows"]),
    batch=st.integers(0, 3),
    poison=values,
    keyword=st.sampled_from(["none", "extra", "bad_state"]),
)
def test_denoisers_take_any_call(name, t, batch, poison, keyword):
    denoiser, shape, cond = DENOISERS[name]
    x = torch.rand(batch, *shape)
    if x.numel():
        x.view(-1)[0] = poison
    t = {"rows": torch.full((batch,), 0.3), "wrong_rows": torch.full((batch + 1,), 0.3)}.get(t, t)
    cond = dict(cond)
    if keyword == "extra":
        cond["colour"] = torch.zeros(batch, 1)
    elif keyword == "bad_state" and "state" in cond:
        cond["state"] = torch.full((1, 3), math.nan)
    if x.numel() and not bool(torch.isfinite(x).all()):
        try:
            out = denoiser(x, t, **cond)
        except Exception as error:  # noqa: BLE001
            assert _ours(error), "".join(traceback.format_exception(error))
        else:  # a NaN input may only give NaN rows where the input was NaN
            assert bool(torch.isfinite(out[1:]).all())
        return
    with torch.no_grad():
        _call(lambda: denoiser(x, t, **cond))
