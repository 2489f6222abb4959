"""The deepinv peers: DDRM's eta reaches deepinv's loop, bad values are refused, and the
noise deepinv's DDRM draws is what :class:`experiments.peers.DeepinvDDRM` documents."""

import math

import deepinv
import pytest
import torch

import guided
import operators
import priors

from experiments import peers


class _Recorder(torch.nn.Module):
    """A deepinv denoiser that returns zeros and records what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, float]] = []

    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.calls.append((x.clone(), float(sigma)))
        return torch.zeros_like(x)


def test_deepinv_ddrm_draws_noise_at_a_level_over_sqrt_2():
    torch.manual_seed(0)
    mask = torch.zeros(1, 1, 64, 64)  # nothing observed: every coordinate is pure noise
    physics = deepinv.physics.Inpainting(
        img_size=(1, 64, 64), mask=mask, noise_model=deepinv.physics.GaussianNoise(0.01)
    )
    recorder = _Recorder()
    deepinv.sampling.DDRM(recorder, sigmas=[0.8, 0.4], eta=1.0)(
        physics(torch.zeros(1, 1, 64, 64)), physics
    )
    (first, told_first), (second, told_second) = recorder.calls
    assert (told_first, told_second) == (0.8, 0.4)
    # told 0.8 and 0.4, the inputs' standard deviations are 0.8 / sqrt 2 and 0.4 / sqrt 2
    assert float(first.std()) == pytest.approx(0.8 / math.sqrt(2), rel=0.05)
    assert float(second.std()) == pytest.approx(0.4 / math.sqrt(2), rel=0.05)


def _problem():
    prior = priors.load("digits")
    g = torch.Generator().manual_seed(0)
    x = torch.rand((1, *prior.shape), generator=g) * 2 - 1
    op = operators.Inpainting(torch.rand(prior.shape, generator=g) > 0.5)
    return prior, op, op(x) + 0.05 * torch.randn(op(x).shape, generator=g)


def test_deepinv_ddrm_eta_reaches_the_loop():
    prior, op, y = _problem()
    x_T, ts = torch.zeros(1, *prior.shape), guided.time_grid(3)

    def solve(**kwargs):
        peer = peers.DeepinvDDRM(op, y, 0.05, **kwargs)
        return peer(prior, x_T, ts, generator=torch.Generator().manual_seed(1))

    default = solve()
    assert torch.equal(default, solve(eta=0.85, etab=1.0))  # the defaults are deepinv's
    assert not torch.allclose(default, solve(eta=0.0))
    assert not torch.allclose(default, solve(etab=0.5))


@pytest.mark.parametrize("kwargs", [{"eta": -0.1}, {"eta": 1.5}, {"etab": 2.0}])
def test_deepinv_ddrm_refuses_bad_eta(kwargs):
    _, op, y = _problem()
    with pytest.raises(ValueError, match="eta"):
        peers.DeepinvDDRM(op, y, 0.05, **kwargs)
