"""The U-Net: attention maps through hooks, shapes, labels; classifiers."""

import math

import pytest
import torch

import priors


def _net(**kwargs):
    torch.manual_seed(0)
    defaults = {
        "in_channels": 1,
        "channels": (8, 16, 16),
        "blocks": 1,
        "attention": (False, True, True),
        "heads": 2,
        "num_classes": 3,
        "class_tokens": 2,
        "context_dim": 8,
    }
    return priors.UNet(**(defaults | kwargs))


def _perturb(net):
    """Zero-initialised output layers hide bugs: give every parameter random values."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net


def test_attention_maps_have_documented_shapes_and_do_not_change_the_output():
    net = _perturb(_net()).eval()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    t, label = torch.tensor([0.3, 0.7]), torch.tensor([0, 2])
    plain = net(x, t, label)
    with priors.record_attention(net) as maps:
        hooked = net(x, t, label)
    assert torch.equal(plain, hooked)
    layers = priors.attention_layers(net)
    assert set(maps) == set(layers) and len(layers) == 2 * (2 + 1 + 2 * 2)
    for name, m in maps.items():
        tag, kind = name.split(".")[0], name.split(".")[-1]
        assert tag in ("down", "mid", "up") and layers[name].tag == tag
        level = 2 if tag == "mid" else int(name.split(".")[1])
        pixels = (16 // 2**level) ** 2
        keys = pixels if kind == "self" else 2
        assert m.shape == (2, 2, pixels, keys), name
        torch.testing.assert_close(m.sum(-1), torch.ones(2, 2, pixels))  # probabilities
    # the hooks are gone after the block
    assert all(not layer.maps._forward_hooks for layer in layers.values())
    with priors.record_attention(net) as again:
        pass
    assert again == {}


def test_labels_none_and_negative_are_the_null_class():
    net = _perturb(_net()).eval()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.5, 0.5])
    torch.testing.assert_close(net(x, t, None), net(x, t, torch.tensor([-1, -1])))
    assert not torch.allclose(net(x, t, torch.tensor([0, 1])), net(x, t, None))


def test_unet_rejects_bad_shapes_and_configs():
    net = _net()
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.zeros(1, 1, 10, 16), torch.zeros(1))
    with pytest.raises(ValueError, match=r"shape \(B, 1, H, W\)"):
        net(torch.zeros(1, 3, 16, 16), torch.zeros(1))
    with pytest.raises(ValueError, match="one flag per level"):
        priors.UNet(1, channels=(8, 16), attention=(True,))
    with pytest.raises(ValueError, match="class_tokens"):
        priors.UNet(1, class_tokens=2)


def test_fully_convolutional_network_runs_at_larger_sizes():
    net = _perturb(_net(attention=(False, False, False), class_tokens=0, context_dim=None))
    out = net(torch.zeros(1, 1, 32, 48), torch.zeros(1), torch.tensor([1]))
    assert out.shape == (1, 1, 32, 48)


def test_classifier_time_rules():
    encoder = priors.UNet(1, channels=(8, 16), attention=(False, False), encoder_only=True)
    clean = priors.Classifier(encoder, 4)
    x = torch.randn(3, 1, 8, 8)
    assert clean(x).shape == (3, 4) and clean.features(x).shape == (3, 16)
    with pytest.raises(ValueError, match="takes no time"):
        clean(x, 0.5)
    noisy = priors.Classifier(
        priors.UNet(1, channels=(8, 16), attention=(False, False), encoder_only=True),
        4,
        priors.CosineSchedule(),
    )
    assert noisy(x, torch.rand(3)).shape == (3, 4)
    with pytest.raises(ValueError, match="needs the time"):
        noisy(x)
    with pytest.raises(ValueError, match="encoder_only"):
        priors.Classifier(priors.UNet(1, channels=(8, 16), attention=(False, False)), 4)


def test_the_time_embedding_is_the_sinusoidal_formula_and_differentiates():
    from priors.embedding import timestep_embedding

    t = torch.tensor([0.0, 0.25, 1.0])
    for dim in (7, 32):
        half = dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
        args = 1000.0 * t[:, None] * freqs[None]
        expected = torch.cat([torch.cos(args), torch.sin(args), torch.zeros(3, dim % 2)], 1)
        torch.testing.assert_close(timestep_embedding(t, dim), expected)
    t = torch.tensor([0.3], requires_grad=True)
    (grad,) = torch.autograd.grad(timestep_embedding(t, 8).sum(), t)
    assert grad.abs() > 0


def test_an_embedding_first_made_in_inference_mode_still_differentiates():
    from priors.embedding import _frequencies, timestep_embedding

    _frequencies.cache_clear()
    with torch.inference_mode():
        timestep_embedding(torch.tensor([0.1, 0.2]), 6)
    t = torch.tensor([0.3, 0.4], requires_grad=True)
    (grad,) = torch.autograd.grad(timestep_embedding(t, 6).sum(), t)
    assert bool(torch.isfinite(grad).all()) and bool((grad != 0).all())


def test_pixel_norm_keeps_the_network_local():
    """With per-pixel normalisation (groups=-1) the output far from a change of the input
    does not move; with group norm it does (statistics pooled over the image)."""
    g = torch.Generator().manual_seed(0)
    for groups, local in ((-1, True), (0, True), (4, False)):
        net = priors.UNet(1, channels=(8, 16), blocks=1, attention=(False, False), groups=groups)
        for p in net.parameters():  # away from the zero initialisation of the outputs
            torch.nn.init.normal_(p, std=0.3, generator=g)
        x = torch.randn(1, 1, 128, 128, generator=g)
        changed = x.clone()
        changed[..., :8, :8] += 5.0
        t = torch.tensor([0.5])
        with torch.no_grad():  # 88 pixels away: beyond the receptive field (about 32)
            far = (net(x, t) - net(changed, t))[..., 96:, 96:].abs().max()
        assert (float(far) == 0.0) == local, groups
    with pytest.raises(
        ValueError, match=r"groups \(> 0: .* -1: .* 0: none\) must be an integer >= -1"
    ):  # not gcd(-2, 8) = 2
        priors.UNet(1, channels=(8, 16), blocks=1, attention=(False, False), groups=-2)


def test_a_one_dimensional_unet_runs_on_signals_and_stays_local():
    """dims=1: signals (B, C, T) through the same blocks; attention maps over the positions;
    with per-position normalisation the output far from a change does not move (a change in
    the first 8 positions moved the output up to position 58, measured); the denoiser checks
    the signal's rank."""
    net = _perturb(_net(dims=1)).eval()
    x = torch.randn(2, 1, 64, generator=torch.Generator().manual_seed(3))
    t, label = torch.tensor([0.3, 0.7]), torch.tensor([0, 2])
    with priors.record_attention(net) as maps:
        out = net(x, t, label)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert maps["mid.self"].shape == (2, 2, 16, 16)  # 64 / 2^2 positions at the middle
    assert maps["mid.cross"].shape == (2, 2, 16, 2)  # to the two class tokens
    local = _perturb(_net(dims=1, attention=(False, False, False), groups=-1)).eval()
    x = torch.randn(1, 1, 256, generator=torch.Generator().manual_seed(4))
    changed = x.clone()
    changed[..., :8] += 5.0
    with torch.no_grad():
        far = (local(x, torch.tensor([0.5])) - local(changed, torch.tensor([0.5])))[..., 128:]
    assert float(far.abs().max()) == 0.0
    denoiser = priors.UNetDenoiser(net, priors.CosineSchedule(), (1, 64))
    assert denoiser(x[..., :64].expand(2, 1, 64), torch.tensor(0.5), label=label).shape == (
        2,
        1,
        64,
    )
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 1, T\)"):
        denoiser(torch.zeros(2, 1, 8, 8), torch.tensor(0.5))
    with pytest.raises(ValueError, match=r"T must be divisible by 4"):
        net(torch.zeros(1, 1, 30), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="must have 2 sizes"):
        priors.UNetDenoiser(net, priors.CosineSchedule(), (1, 8, 8))
    with pytest.raises(ValueError, match="dims must be an integer in"):
        _net(dims=3)
