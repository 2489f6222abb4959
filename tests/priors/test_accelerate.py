"""The accelerated denoiser: a no-op by default, bf16 close to fp32 and differentiable,
channels-last identical, clear errors for what it cannot do."""

import pytest
import torch

import guided
import operators
import priors


def _prior(seed=0):
    torch.manual_seed(seed)
    net = priors.UNet(1, channels=(8, 16), attention=(False, True), heads=2)
    for p in net.parameters():  # the output layer starts at zero: give it weights
        p.data.add_(0.05 * torch.randn_like(p))
    return priors.UNetDenoiser(net, priors.CosineSchedule(), (1, 8, 8)).eval()


def test_the_default_changes_nothing_bit_for_bit():
    prior = _prior()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor(0.6, dtype=torch.float64)
    assert torch.equal(priors.Accelerated(prior)(x, t), prior(x, t))


def test_channels_last_gives_the_same_posterior_mean():
    x, t = torch.randn(3, 1, 8, 8), torch.tensor(0.4, dtype=torch.float64)
    expected = _prior()(x, t)
    fast = priors.Accelerated(_prior(), channels_last=True)
    torch.testing.assert_close(fast(x, t), expected, rtol=1e-5, atol=1e-5)


def test_bf16_is_close_to_fp32_keeps_the_dtype_and_guides():
    prior = _prior()
    x, t = torch.randn(4, 1, 8, 8), torch.tensor(0.5, dtype=torch.float64)
    fast = priors.Accelerated(prior, precision="bf16")
    with torch.no_grad():
        reference, out = prior(x, t), fast(x, t)
    assert out.dtype == torch.float32
    error = (out - reference).norm() / reference.norm()
    assert 0 < float(error) < 0.03  # bf16 rounding: changed, and only a little
    op = operators.Inpainting(torch.rand(1, 8, 8) < 0.5)
    y = op(torch.rand(2, 1, 8, 8) * 2 - 1)
    guidedp = guided.GuidedDenoiser(fast, guided.DPS(op, y, 0.05, zeta=1.0))
    g = torch.Generator().manual_seed(0)
    x_0 = guided.DDPM()(guidedp, guided.initial_noise(fast.schedule, (2, 1, 8, 8), g),
                        guided.time_grid(5), generator=g)  # fmt: skip
    assert bool(torch.isfinite(x_0).all())


def test_bad_settings_are_refused():
    prior = _prior()
    with pytest.raises(ValueError, match="precision"):
        priors.Accelerated(prior, precision="fp8")
    gmm = priors.GaussianMixture(
        torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None], priors.CosineSchedule()
    )
    with pytest.raises(ValueError, match="no network"):
        priors.Accelerated(gmm, compile=True)
    with pytest.raises(TypeError, match="Denoiser"):
        priors.Accelerated(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="fp16 autocast needs a GPU"):
        priors.Accelerated(prior, precision="fp16")(torch.randn(1, 1, 8, 8), 0.5)


@pytest.mark.slow
def test_a_compiled_network_matches_eager():
    x, t = torch.randn(3, 1, 8, 8), torch.tensor(0.3, dtype=torch.float64)
    expected = _prior()(x, t)
    fast = priors.Accelerated(_prior(), compile=True)
    torch.testing.assert_close(fast(x, t), expected, rtol=1e-4, atol=1e-4)
