"""CFG-Zero*: diffusers' formula on the flow velocities, zero-init by time, CFG's passes."""

import itertools

import pytest
import torch

import guided
import priors

from priors.tweedie import flow_from_x0

F64 = torch.float64
RECTIFIED = priors.RectifiedSchedule()
CENTRES = torch.tensor([[2.0, -1.0, 0.5], [-1.5, 1.0, 2.0], [0.0, 3.0, -2.0]], dtype=F64)


def _velocity(x_t, t, label=None):
    """A class-conditional velocity field (unconditional rows: label < 0 or None): the exact
    field of a point mass at the class centre, plus a rotation so that conditional and
    unconditional velocities are not parallel."""
    t = torch.as_tensor(t, dtype=x_t.dtype).reshape(-1, 1)
    if label is None:
        label = torch.full((x_t.shape[0],), -1)
    centre = torch.where(
        (label >= 0)[:, None], CENTRES[label.clamp(min=0)], torch.zeros(3, dtype=F64)
    )
    twist = 0.3 * x_t.roll(1, dims=1) * (label >= 0)[:, None]
    return (x_t - centre) / t.clamp(min=1e-3) + twist


def _flow():
    flow = priors.FlowDenoiser(_velocity, RECTIFIED, (3,))
    flow.num_classes = 3
    return flow


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0, 7.5])
def test_the_guided_velocity_is_diffusers_cfg_zero_star(scale):
    from diffusers.guiders import ClassifierFreeZeroStarGuidance

    flow = _flow()
    x_t = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    label = torch.tensor([0, 1, 2, 1, 0])
    t = torch.tensor(0.6, dtype=F64)
    x_hat = guided.CFGZeroStar(flow, scale, zero_above=None)(x_t, t, label=label)
    ours = flow_from_x0(x_t, x_hat, *RECTIFIED(t), *RECTIFIED.derivatives(t))
    theirs = ClassifierFreeZeroStarGuidance(guidance_scale=scale, zero_init_steps=0)
    theirs.set_state(step=3, num_inference_steps=10, timestep=torch.tensor(600))
    expected = theirs.forward(_velocity(x_t, t, label), _velocity(x_t, t)).pred
    # diffusers computes s* in float32: agreement to its rounding
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)


def test_the_optimised_scale_is_the_least_squares_factor_per_row():
    g = torch.Generator().manual_seed(1)
    u_c, u_u = torch.randn(4, 2, 3, generator=g, dtype=F64), torch.randn(4, 2, 3, generator=g)
    u_u = u_u.to(F64)
    s = guided.cfg_zero_star.optimised_scale(u_c, u_u)
    assert s.shape == (4, 1, 1)
    for i in range(4):
        best = (u_c[i] * u_u[i]).sum() / u_u[i].square().sum()
        torch.testing.assert_close(s[i].squeeze(), best, rtol=1e-7, atol=0)
        # the factor minimises || u_c - s u_u || over s
        residual = (u_c[i] - s[i] * u_u[i]).norm()
        assert residual <= (u_c[i] - 1.01 * s[i] * u_u[i]).norm()
        assert residual <= (u_c[i] - 0.99 * s[i] * u_u[i]).norm()


def test_zero_init_holds_the_state_still_at_and_above_its_time():
    flow = _flow()
    x_t = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    label = torch.tensor([0, 1, 2, 0])
    guider = guided.CFGZeroStar(flow, 4.0, zero_above=0.9)
    ts = guided.time_grid(10)
    moved = []
    for t, s in itertools.islice(itertools.pairwise(ts), 3):
        x_s = guided.DDIM()(guider, x_t, torch.stack([t, s]), label=label)
        moved.append(float((x_s - x_t).abs().max()))
    assert moved[0] == pytest.approx(0, abs=1e-12) and moved[1] == pytest.approx(0, abs=1e-12)
    assert moved[2] > 0.1  # t = 0.8 < 0.9: guided
    # per-row times: rows at or above zero_above take the still estimate, the others CFG-Zero*
    t = torch.tensor([1.0, 0.5, 0.95, 0.3], dtype=F64)
    rows = guider(x_t, t, label=label)
    torch.testing.assert_close(rows[[0, 2]], x_t[[0, 2]] - t[[0, 2], None] * 0)
    free = guided.CFGZeroStar(flow, 4.0, zero_above=None)
    torch.testing.assert_close(rows[[1, 3]], free(x_t, t, label=label)[[1, 3]])


def test_scale_one_is_the_conditional_prediction_and_two_passes_are_counted():
    flow = _flow()
    x_t = torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    label = torch.tensor([2, 0, 1])
    one = guided.CFGZeroStar(flow, 1.0, zero_above=None)
    torch.testing.assert_close(one(x_t, 0.4, label=label), flow(x_t, 0.4, label=label))
    cost = priors.Cost()
    with priors.measure(cost, batch=3):
        guided.CFGZeroStar(flow, 3.0)(x_t, 0.4, label=label)
    assert cost.nfe == 2


def test_a_diffusion_prior_and_bad_settings_are_refused():
    mixture = priors.GaussianMixture(torch.ones(1), torch.zeros(1, 3), torch.eye(3)[None],
                                     priors.CosineSchedule())  # fmt: skip
    mixture.num_classes = 3
    with pytest.raises(ValueError, match="RectifiedSchedule, got CosineSchedule.*ClassifierFree"):
        guided.CFGZeroStar(mixture, 3.0)
    with pytest.raises(ValueError, match="zero_above"):
        guided.CFGZeroStar(_flow(), 3.0, zero_above=1.5)
    with pytest.raises(ValueError, match="scale"):
        guided.CFGZeroStar(_flow(), float("nan"))
