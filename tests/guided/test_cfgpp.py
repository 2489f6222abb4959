"""CFG++: unconditional DDIM at scale 0; one step is a DDIM step with classifier-free guidance
at the step-dependent scale lambda / (1 - sigma_s alpha_t / (alpha_s sigma_t)); two passes per
step; clear errors."""

import pytest
import torch

import guided
import priors

from tests.guided.test_apg import Toy


def _start(rows=4):
    g = torch.Generator().manual_seed(5)
    return torch.randn(rows, 5, generator=g, dtype=torch.float64), torch.tensor([0, 2, 1, 0])


def test_scale_zero_is_the_unconditional_ddim_sampler():
    toy = Toy()
    x_T, label = _start()
    grid = guided.time_grid(6)
    out = guided.CFGPlusPlus(0.0)(toy, x_T, grid, label=label)
    plain = guided.DDIM()(toy, x_T, grid, label=torch.full_like(label, -1))
    torch.testing.assert_close(out, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [0.3, 1.0])
def test_a_step_is_cfg_at_the_step_dependent_scale(scale):
    toy = Toy()
    x_T, label = _start()
    grid = torch.tensor([0.7, 0.45], dtype=torch.float64)
    (alpha_t, sigma_t), (alpha_s, sigma_s) = toy.schedule(grid[0]), toy.schedule(grid[1])
    w = scale / (1 - float(sigma_s * alpha_t / (alpha_s * sigma_t)))
    out = guided.CFGPlusPlus(scale)(toy, x_T, grid, label=label)
    cfg = guided.DDIM()(guided.ClassifierFree(toy, w), x_T, grid, label=label)
    torch.testing.assert_close(out, cfg, rtol=1e-10, atol=1e-10)


def test_it_steps_from_pure_noise_on_the_rectified_schedule():
    """At t = 1 (alpha = 0) the unconditional noise estimate is x_t / sigma_t: no division by
    alpha, so CFG++ starts there, at scale 0 as DDIM does, and a run from t = 1 is the limit
    of runs started just below."""
    toy = Toy()
    toy.schedule = priors.RectifiedSchedule()
    x_T, label = _start()
    grid = guided.time_grid(6)
    out = guided.CFGPlusPlus(0.0)(toy, x_T, grid, label=label)
    plain = guided.DDIM()(toy, x_T, grid, label=torch.full_like(label, -1))
    torch.testing.assert_close(out, plain, rtol=1e-12, atol=1e-12)
    below = grid.clone()
    below[0] = 1 - 1e-9
    top, near = (guided.CFGPlusPlus(0.6)(toy, x_T, g, label=label) for g in (grid, below))
    assert torch.isfinite(top).all()
    torch.testing.assert_close(top, near, rtol=0, atol=1e-6)


def test_two_passes_per_step():
    toy = Toy()
    x_T, label = _start()
    cost = priors.Cost()
    guided.CFGPlusPlus(0.6)(toy, x_T, guided.time_grid(5), cost=cost, label=label)
    assert cost.nfe == 2 * 5


def test_errors():
    toy = Toy()
    x_T, label = _start()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="scale"):
            guided.CFGPlusPlus(bad)
    with pytest.raises(ValueError, match="missing"):
        guided.CFGPlusPlus(0.5)(toy, x_T, guided.time_grid(2))
    with pytest.raises(ValueError, match="class for every row"):
        guided.CFGPlusPlus(0.5)(toy, x_T, guided.time_grid(2), label=torch.full_like(label, -1))
