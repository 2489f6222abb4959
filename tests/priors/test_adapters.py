"""Published-checkpoint loaders (tiny random checkpoints built and saved here) and the
deepinv denoiser adapter."""

import pytest
import torch

from torch import nn

import priors

from priors.adapters import DeepinvDenoiser, load_adm, load_diffusers


def _gaussian_prior(d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    mean = 0.3 * torch.randn(d, generator=g, dtype=torch.float64)
    return (
        priors.GaussianMixture(torch.ones(1), mean[None], cov[None], priors.LinearSchedule()),
        mean,
        cov,
    )


def test_deepinv_denoiser_is_the_exact_posterior_mean_in_zero_one_units():
    prior, mean, cov = _gaussian_prior()
    g = torch.Generator().manual_seed(1)
    x01 = torch.rand(4, 6, generator=g, dtype=torch.float64)
    sigma01 = torch.tensor([0.02, 0.05, 0.1, 0.2], dtype=torch.float64)
    y01 = x01 + sigma01[:, None] * torch.randn(4, 6, generator=g, dtype=torch.float64)
    out = DeepinvDenoiser(prior)(y01, sigma01[:, None])
    # in [-1, 1]: y = 2 y01 - 1 = x + 2 sigma01 n, E[x | y] by the Gaussian formula
    y, s2 = 2 * y01 - 1, (2 * sigma01) ** 2
    expected = torch.stack(
        [
            mean
            + cov
            @ torch.linalg.solve(cov + s2[i] * torch.eye(6, dtype=torch.float64), y[i] - mean)
            for i in range(4)
        ]
    )
    torch.testing.assert_close(out, (expected + 1) / 2, rtol=1e-6, atol=1e-6)
    # one scalar sigma for the whole batch, as deepinv's DPS passes it
    scalar = DeepinvDenoiser(prior)(y01, torch.tensor(0.05, dtype=torch.float64))
    torch.testing.assert_close(scalar[1], out[1], rtol=1e-6, atol=1e-6)


def test_deepinv_denoiser_is_functorch_safe():
    prior, _, _ = _gaussian_prior()
    model = DeepinvDenoiser(prior)
    x = torch.rand(3, 6, dtype=torch.float64)
    sigma = torch.full((3, 1), 0.1, dtype=torch.float64)
    out, vjp = torch.func.vjp(lambda z: model(z, sigma), x)
    (grad,) = vjp(torch.ones_like(out))
    assert grad.shape == x.shape and bool(torch.isfinite(grad).all())
    with pytest.raises(ValueError, match="one per row"):
        model(x, torch.ones(2))
    with pytest.raises(TypeError, match="Denoiser"):
        DeepinvDenoiser(torch.nn.Identity())


def test_deepinv_dps_runs_on_our_prior():
    import deepinv

    prior = priors.load("digits")
    model = DeepinvDenoiser(prior, label=torch.tensor([3]))
    physics = deepinv.physics.Inpainting(
        (1, 16, 16), mask=0.5, rng=torch.Generator().manual_seed(0)
    )
    x01 = torch.full((1, 1, 16, 16), 0.1)
    y = physics(x01)
    dps = deepinv.sampling.DPS(
        model, num_steps=5, dtype=torch.float32, rng=torch.Generator().manual_seed(0)
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = dps(y, physics)
    assert out.shape == x01.shape and bool(torch.isfinite(out).all())


def test_deepinv_ddrm_and_diffpir_run_on_our_prior():
    import deepinv

    model = DeepinvDenoiser(priors.load("digits"))
    mask = torch.ones(1, 16, 16)
    mask[:, 4:12, 4:12] = 0
    physics = deepinv.physics.Inpainting(
        (1, 16, 16), mask=mask, noise_model=deepinv.physics.GaussianNoise(0.01)
    )
    x01 = torch.full((1, 1, 16, 16), 0.5)
    y = physics(x01)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ddrm = deepinv.sampling.DDRM(model, sigmas=torch.linspace(1, 0, 10).tolist())(y, physics)
        diffpir = deepinv.sampling.DiffPIR(model, deepinv.optim.L2(), sigma=0.01, max_iter=5)(
            y, physics
        )
    for out in (ddrm, diffpir):
        assert out.shape == x01.shape and bool(torch.isfinite(out).all())
        kept = mask.bool().expand_as(out)
        assert float((out - x01)[kept].abs().mean()) < 0.1  # observed pixels are kept


def test_adm_checkpoint_matches_the_raw_model(tmp_path):
    from deepinv.models import DiffUNet

    torch.manual_seed(0)
    raw = DiffUNet(in_channels=3, out_channels=3, pretrained=None).eval()
    path = tmp_path / "adm.pt"
    torch.save(raw.state_dict(), path)
    denoiser = load_adm(path, image_size=32)
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    n = 400  # discrete step n sits at t = n / 1000 and is embedding index n - 1
    t = torch.tensor(n / 1000, dtype=torch.float64)
    with torch.no_grad():
        eps = raw.forward_diffusion(x_t, torch.full((2,), n - 1.0))[:, :3]
        alpha, sigma = (float(c) for c in priors.LinearSchedule()(t))
        expected = (x_t - sigma * eps) / alpha
        torch.testing.assert_close(denoiser(x_t, t), expected, rtol=1e-4, atol=1e-4)
    torch.save({"not": "a model"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        load_adm(tmp_path / "bad.pt")


def test_adm_attention_is_recorded_and_drives_sag(tmp_path):
    """ADM (deepinv's DiffUNet) attention blocks: named by block, the recorded
    probabilities reproduce each block's fused attention output, the model output is
    unchanged and the hooks leave; SAG runs on the adapter with the middle block."""
    from deepinv.models import DiffUNet

    import guided

    torch.manual_seed(0)
    path = tmp_path / "adm.pt"
    torch.save(DiffUNet(in_channels=3, out_channels=3, pretrained=None).state_dict(), path)
    denoiser = load_adm(path, image_size=32)
    layers = priors.attention_layers(denoiser)
    assert "mid.1.self" in layers and all(n.endswith(".self") for n in layers)
    assert {n.split(".")[0] for n in layers} == {"down", "mid", "up"}
    seen: dict[str, tuple] = {}
    handles = [
        m.attention.register_forward_hook(
            lambda _, i, o, n=n: seen.__setitem__(n, (i[0].detach(), o.detach()))
        )
        for n, m in layers.items()
    ]
    x_t = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(0.5)
    with torch.no_grad():
        with priors.record_attention(denoiser) as maps:
            hooked = denoiser(x_t, t)
        for h in handles:
            h.remove()
        plain = denoiser(x_t, t)
    torch.testing.assert_close(hooked, plain)
    assert set(maps) == set(layers)
    for name, (qkv, out) in seen.items():
        probs, heads = maps[name], layers[name].attention.n_heads
        batch, width, length = qkv.shape
        assert probs.shape == (batch, heads, length, length)
        torch.testing.assert_close(probs.sum(-1), torch.ones(batch, heads, length))
        ch = width // (3 * heads)
        v = qkv.reshape(batch, heads, 3 * ch, length)[:, :, 2 * ch :]  # legacy order
        rebuilt = torch.einsum("bhqk,bhck->bhcq", probs, v).reshape(batch, -1, length)
        torch.testing.assert_close(rebuilt, out, rtol=1e-4, atol=1e-5)
    for layer in layers.values():
        assert not layer.attention._forward_hooks
    with torch.no_grad():
        sag = guided.SelfAttentionGuidance(denoiser, 0.5)
        assert sag.layer == "mid.1.self"
        assert bool(torch.isfinite(sag(x_t, t)).all())


@pytest.mark.parametrize("new_order", [False, True])
def test_adm_attention_probabilities_in_both_channel_orders(new_order):
    """Both of ADM's qkv layouts: the recorded probabilities times the values give the
    block's attention output."""
    from deepinv.models.diffunet import AttentionBlock

    torch.manual_seed(0)
    net = nn.Module()
    net.middle_block = nn.Sequential(
        AttentionBlock(32, num_head_channels=8, use_new_attention_order=new_order)
    )
    block = net.middle_block[0]
    seen = {}
    block.attention.register_forward_hook(lambda _, i, o: seen.update(qkv=i[0], out=o))
    x = torch.randn(2, 32, 3, 3)
    with torch.no_grad(), priors.record_attention(net) as maps:
        block(x)
    probs = maps["mid.0.self"]
    assert probs.shape == (2, 4, 9, 9)
    qkv = seen["qkv"]  # (2, 3 * 4 heads * 8, 9)
    parts = qkv.chunk(3, 1) if new_order else qkv.reshape(2, 4, 24, 9).split(8, 2)
    v = parts[2].reshape(2, 4, 8, 9)
    rebuilt = torch.einsum("bhqk,bhck->bhcq", probs, v).reshape(2, 32, 9)
    torch.testing.assert_close(rebuilt, seen["out"], rtol=1e-4, atol=1e-5)


def _tiny_unet(**overrides):
    """A seeded 8x8 single-channel diffusers UNet2DModel (plain blocks unless overridden)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    config = {
        "sample_size": 8,
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": (8, 16),
        "down_block_types": ("DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "norm_num_groups": 4,
    }
    return UNet2DModel(**(config | overrides)).eval()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_diffusers_pipeline_matches_the_raw_model(tmp_path, prediction):
    from diffusers import DDPMPipeline, DDPMScheduler

    unet = _tiny_unet()
    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    denoiser = load_diffusers(tmp_path / "pipe")
    assert denoiser.schedule.steps == 100 and denoiser.shape == (1, 8, 8)
    x_t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    n = 37
    t = torch.tensor(n / 100, dtype=torch.float64)
    abar = scheduler.alphas_cumprod[n - 1].double()
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    with torch.no_grad():
        out = unet(x_t, torch.full((2,), float(n - 1))).sample.double()
        x = x_t.double()
        expected = (
            (x - sigma * out) / alpha if prediction == "epsilon" else alpha * x - sigma * out
        )
        torch.testing.assert_close(denoiser(x, t), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="saved diffusers pipeline"):
        load_diffusers(tmp_path / "pipe" / "unet")


def test_diffusers_attention_is_recorded_and_drives_sag(tmp_path):
    """Attention maps of a diffusers U-Net with attention blocks, through our adapter: named
    by block, probabilities per head, processors restored; SAG runs on it."""
    from diffusers import DDPMPipeline, DDPMScheduler

    import guided

    unet = _tiny_unet(
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(
        tmp_path / "pipe"
    )
    denoiser = load_diffusers(tmp_path / "pipe")
    layers = priors.attention_layers(denoiser)
    assert "mid.attentions.0.self" in layers and "down.1.attentions.0.self" in layers
    before = {name: type(m.processor) for name, m in layers.items()}
    x_t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(0.5)
    with torch.no_grad():
        plain = denoiser(x_t, t)
        with priors.record_attention(denoiser) as maps:
            hooked = denoiser(x_t, t)
    torch.testing.assert_close(hooked, plain, rtol=1e-4, atol=1e-5)
    assert set(maps) == set(layers)
    mid = maps["mid.attentions.0.self"]  # 16 channels / 8 per head = 2 heads, 4x4 grid
    assert mid.shape == (2, 2, 16, 16)
    torch.testing.assert_close(mid.sum(-1), torch.ones(2, 2, 16))
    assert {name: type(m.processor) for name, m in layers.items()} == before
    assert "get_attention_scores" not in vars(layers["mid.attentions.0.self"])
    with torch.no_grad():
        sag = guided.SelfAttentionGuidance(denoiser, 1.0)
        assert sag.layer == "mid.attentions.0.self"
        one, two = sag(x_t, t), guided.SelfAttentionGuidance(denoiser, 2.0)(x_t, t)
    torch.testing.assert_close(two - plain, 2 * (one - plain), rtol=1e-3, atol=1e-4)
