"""RED-diff: Adam as torch's, one NFE and no network VJP per step, its regulariser pulls the
pseudo-inverse start towards the prior (measured on a Gaussian prior and on digits), rows are
independent, bad input is refused."""

import math

import pytest
import torch

import guided
import operators
import priors

from tests.guided.linear_cases import gaussian

F64 = torch.float64


MASK = operators.Inpainting(torch.tensor([1.0, 1, 0, 1, 0, 0], dtype=F64))


def test_the_adam_step_is_torchs():
    """Our per-element Adam (bias-corrected, eps 1e-8) is torch.optim.Adam's, step for step,
    on a fixed sequence of gradients from a fixed start."""
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(2, 6, generator=g, dtype=F64) for _ in range(5)]
    start = torch.randn(2, 6, generator=g, dtype=F64)
    reference = torch.nn.Parameter(start.clone())
    optimiser = torch.optim.Adam([reference], lr=0.1, betas=(0.9, 0.99))
    method = guided.REDDiff(MASK, torch.zeros(1, 6, dtype=F64), 0.1)
    fed = iter(grads)
    method.gradient = lambda run, mu, step: next(fed)  # fixed gradients, no network
    method.start = lambda like: start
    step = guided.Step(0, torch.tensor(0.5), torch.tensor(0.4), 0.7, 0.7, 0.8, 0.6, 10)
    state, ours = method.new_state(), start.clone()
    for grad in grads:
        ours = method.step(None, ours, step, state)
        reference.grad = grad.clone()
        optimiser.step()
        torch.testing.assert_close(ours, reference.detach(), rtol=1e-12, atol=1e-12)


def test_cost_is_one_evaluation_and_no_network_vjp_per_step():
    prior = gaussian(6)
    y = MASK(prior.sample(3, torch.Generator().manual_seed(2)))
    cost = priors.Cost()
    x_T = torch.zeros(3, 6, dtype=F64)
    guided.REDDiff(MASK, y, 0.05)(
        prior, x_T, guided.time_grid(12), generator=torch.Generator().manual_seed(3), cost=cost
    )
    assert (cost.nfe, cost.vjp) == (12, 0)


def test_the_regulariser_moves_the_unobserved_pixels_to_the_posterior():
    """On a Gaussian prior with a mask, the pseudo-inverse start puts 0 in the unobserved
    pixels, 1.47 posterior sd from the exact posterior mean on average; RED-diff (the
    authors' settings) brings them to 0.24 sd at 25 steps, 0.13 at 100 and 0.06 at 200
    (measured), and the observed pixels keep the measurement."""
    prior = gaussian(6)
    g = torch.Generator().manual_seed(4)
    truth = prior.sample(1, g)
    y = MASK(truth) + 0.05 * torch.randn(1, 6, generator=g, dtype=F64) * MASK.mask
    rows = MASK.mask.bool()
    exact = prior.posterior(torch.eye(6, dtype=F64)[rows], y[0][rows], 0.05)
    sd = exact.covs[0].diagonal().sqrt()
    x_T = torch.zeros(64, 6, dtype=F64)
    out = guided.REDDiff(MASK, y, 0.05)(prior, x_T, guided.time_grid(200), generator=g)
    hidden = ~rows
    error = ((out.mean(0) - exact.means[0]) / sd)[hidden].abs().mean()
    start = ((MASK.pinv(y)[0] - exact.means[0]) / sd)[hidden].abs().mean()
    assert error < 0.15 and start > 1.2
    torch.testing.assert_close(out[:, rows].mean(0), y[0][rows], rtol=0, atol=0.1)


def test_a_row_does_not_depend_on_its_companions():
    prior = gaussian(6)
    g = torch.Generator().manual_seed(5)
    y = MASK(torch.randn(3, 6, generator=g, dtype=F64))
    x_T = torch.zeros(3, 6, dtype=F64)

    def run(rows):
        gens = [torch.Generator().manual_seed(100 + r) for r in rows]
        method = guided.REDDiff(MASK, y[rows], 0.05)
        return method(prior, x_T[rows], guided.time_grid(6), generator=gens)

    torch.testing.assert_close(run([1]), run([0, 1, 2])[1:2], rtol=0, atol=1e-12)


def test_bad_input_is_refused():
    y = torch.zeros(1, 6, dtype=F64)
    with pytest.raises(operators.NotDifferentiableError, match="derivative-free"):
        guided.REDDiff(operators.Quantization((6,), levels=8), y, 0.1)
    for name, bad in [
        ("weight", -1.0),
        ("obs_weight", float("nan")),
        ("lr", 0.0),
        ("lr", math.inf),
        ("betas", (0.9, 1.0)),
        ("betas", (0.9,)),
        ("sigma_x0", -0.1),
    ]:
        with pytest.raises((ValueError, TypeError), match=name):
            guided.REDDiff(MASK, y, 0.1, **{name: bad})
