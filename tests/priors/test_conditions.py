"""Conditions fixed through a sampling run: what depends on them alone is computed once per
run, never served stale (another tensor, an in-place change, changed parameters, another
run) and never when a gradient has to flow through it."""

import itertools

import pytest
import torch

from torch import nn

import guided
import priors

from priors.conditions import remember


class _Counted:
    """``compute`` for :func:`remember` that counts its calls."""

    def __init__(self, source, weight=None):
        self.source, self.weight, self.calls = source, weight, 0

    def __call__(self):
        self.calls += 1
        return 2 * self.source if self.weight is None else self.weight * self.source


def test_outside_a_block_nothing_is_remembered():
    source = torch.ones(3)
    compute = _Counted(source)
    for _ in range(3):
        assert torch.equal(remember("k", source, compute), 2 * source)
    assert compute.calls == 3


def test_inside_a_block_the_value_is_computed_once_per_source():
    source, other = torch.ones(3), torch.ones(3)
    compute, compute_other = _Counted(source), _Counted(other)
    with priors.fixed_conditions():
        first = remember("k", source, compute)
        assert remember("k", source, compute) is first
        assert compute.calls == 1
        remember("k", other, compute_other)  # equal values, another tensor: computed
        assert compute_other.calls == 1
        remember("k", source, compute)  # one entry per key: the first was replaced
        assert compute.calls == 2
        remember("k", source, compute, extra=(3, torch.float64))  # another extra key
        assert compute.calls == 3
    with priors.fixed_conditions():  # a new block starts empty
        remember("k", source, compute)
    assert compute.calls == 4


def test_in_place_changes_of_the_source_or_the_parameters_are_seen():
    source, weight = torch.ones(3), torch.ones(3)
    compute = _Counted(source, weight)
    with priors.fixed_conditions():
        remember("k", source, compute, [weight])
        source[0] = 5.0
        assert torch.equal(remember("k", source, compute, [weight]), torch.tensor([5.0, 1, 1]))
        weight.mul_(2)
        value = remember("k", source, compute, [weight])
        assert torch.equal(value, torch.tensor([10.0, 2, 2]))
        assert remember("k", source, compute, [weight]) is value
    assert compute.calls == 3


def test_nothing_is_remembered_when_a_gradient_must_flow():
    source = torch.ones(3, requires_grad=True)
    weight = torch.ones(3, requires_grad=True)
    with priors.fixed_conditions():
        for s, w in ((source, None), (source.detach(), weight)):
            compute = _Counted(s, w)
            remember("k", s, compute, [] if w is None else [w])
            value = remember("k", s, compute, [] if w is None else [w])
            assert compute.calls == 2 and value.requires_grad
            with torch.no_grad():  # no graph needed: remembered
                remember("k", s, compute, [] if w is None else [w])
                remember("k", s, compute, [] if w is None else [w])
            assert compute.calls == 3


def test_blocks_nest_and_inference_tensors_are_computed_every_time():
    source = torch.ones(3)
    compute = _Counted(source)
    with priors.fixed_conditions():
        remember("k", source, compute)
        with priors.fixed_conditions():
            remember("k", source, compute)  # the inner block has its own values
        remember("k", source, compute)  # the outer one still has its own
    assert compute.calls == 2
    with torch.inference_mode():
        frozen = torch.ones(3)
    compute = _Counted(frozen)
    with priors.fixed_conditions():
        remember("k", frozen, compute)
        remember("k", frozen, compute)
    assert compute.calls == 2


class _Count(nn.Module):
    """An identity layer that counts its calls (placed first in a condition's MLP)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def _policy(optional=()):
    torch.manual_seed(0)
    net = priors.MLP(2, width=16, blocks=2, conditions={"state": 3}, optional=optional)
    with torch.no_grad():  # the zero-initialised output layer would hide the condition
        net.out[-1].weight.normal_(0, 0.3)
    counter = _Count()
    net.condition["state"] = nn.Sequential(counter, *net.condition["state"])
    return priors.MLPDenoiser(net, priors.CosineSchedule()), counter


def test_a_sampler_embeds_the_state_once_and_samples_exactly_as_without_it():
    prior, counter = _policy(optional=["state"])
    g = torch.Generator().manual_seed(1)
    states = torch.randn(6, 3, generator=g)
    states[1] = float("nan")  # a dropped row: the null embedding
    x_T = torch.randn(6, 2, generator=g)
    ts = guided.time_grid(8)
    with torch.no_grad():
        sampled = guided.DDIM()(prior, x_T, ts, state=states)
        assert counter.calls == 1
        x = x_T  # the same DDIM loop by hand, outside any block: embedded at every step
        for t, s in itertools.pairwise(ts):
            x_hat = prior(x, t, state=states)
            x = guided.ddim.ddim_update(x, x_hat, *map(float, prior.schedule(t)),
                                        *map(float, prior.schedule(s)), 0.0)  # fmt: skip
    assert counter.calls == 1 + 8
    assert torch.equal(sampled, x)


def test_training_through_a_block_still_reaches_the_condition_parameters():
    prior, counter = _policy()
    states = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    x_t = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    weight = prior.network.condition["state"][1].weight
    with priors.fixed_conditions():
        for _ in range(2):
            loss = prior(x_t, torch.tensor(0.5), state=states).square().sum()
            (grad,) = torch.autograd.grad(loss, weight)
            assert grad.abs().sum() > 0
    assert counter.calls == 2


def test_a_state_changed_in_place_between_steps_is_embedded_again():
    prior, counter = _policy()
    states = torch.randn(4, 3, generator=torch.Generator().manual_seed(4))
    x_t = torch.randn(4, 2, generator=torch.Generator().manual_seed(5))
    t = torch.tensor(0.5)
    with torch.no_grad(), priors.fixed_conditions():
        before = prior(x_t, t, state=states)
        states.add_(1.0)
        after = prior(x_t, t, state=states)
    assert counter.calls == 2
    with torch.no_grad():
        assert torch.equal(after, prior(x_t, t, state=states))
    assert not torch.equal(before, after)
    with torch.no_grad(), priors.fixed_conditions():
        prior(x_t, t, state=states)
        states[0, 0] = float("nan")  # checked again after an in-place change
        with pytest.raises(ValueError, match="NaN"):
            prior(x_t, t, state=states)
