"""Our convolutional autoencoder: shapes, scale, shared weights at other sizes, its weight
files and the latent prior's (both halves in one file)."""

import pytest
import torch

import priors

from priors.conv_autoencoder import ConvAutoencoder
from priors.weights import read, save

AE = {"shape": [1, 16, 16], "channels": [8, 16], "latent_channels": 3, "blocks": 1}
DENOISER = {
    "network": {"in_channels": 3, "channels": [8, 16], "blocks": 1, "attention": [False, False]},
    "schedule": {"name": "cosine"},
    "shape": [3, 8, 8],
}


def _perturbed(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module.eval()


def test_shapes_scale_and_the_kl_penalty():
    ae = _perturbed(ConvAutoencoder(**AE, scale=2.0))
    assert ae.latent_shape == (3, 8, 8) and ae.factor == 2
    x = torch.randn(2, 1, 16, 16)
    mean, log_var = ae.posterior(x)
    torch.testing.assert_close(ae.encode(x), 2.0 * mean)  # scaled posterior mean
    z = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(ae.decode(z), ae.reconstruct(z / 2.0))
    assert ae(x).shape == x.shape
    kl = ae.kl(mean, log_var)
    expected = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum((1, 2, 3))
    torch.testing.assert_close(kl, expected)
    assert float(ae.kl(torch.zeros(1, 3), torch.zeros(1, 3))) == 0  # q = N(0, I)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="divisible by 2"):
        ConvAutoencoder([1, 15, 16], channels=[8, 16])
    with pytest.raises(ValueError, match="scale must be finite and positive"):
        ConvAutoencoder(**AE, scale=float("inf"))
    with pytest.raises(ValueError, match="latent_channels"):
        ConvAutoencoder([1, 16, 16], latent_channels=0)
    for groups, error in ((-2, ValueError), (1.5, ValueError), (True, TypeError)):
        with pytest.raises(error, match=r"groups \(> 0: .* -1: .* 0: none\) must be an integer"):
            ConvAutoencoder(**{**AE, "groups": groups})
    ae = ConvAutoencoder(**AE)
    with pytest.raises(ValueError, match="shape"):
        ae.encode(torch.zeros(1, 1, 32, 32))  # another size: with_shape
    with pytest.raises(ValueError, match="1 channel"):
        ae.with_shape([3, 16, 16])


def test_another_size_shares_the_weights():
    ae = _perturbed(ConvAutoencoder(**AE, scale=0.5))
    big = ae.with_shape([1, 32, 16])
    assert big.latent_shape == (3, 16, 8) and big.scale == 0.5
    assert big.encoder is ae.encoder and big.decoder is ae.decoder
    x = torch.randn(1, 1, 32, 16)
    torch.testing.assert_close(big.encode(x), 0.5 * ae.posterior(x)[0])
    # local: the top half of a taller image encodes like the image of that half alone,
    # away from the seam (its receptive field reaches 10 pixels, 5 latent rows)
    top = ae.encode(x[:, :, :16])
    torch.testing.assert_close(big.encode(x)[:, :, :3], top[:, :, :3])


def test_weight_files_of_an_autoencoder_and_of_a_latent_prior(tmp_path):
    ae = _perturbed(ConvAutoencoder(**AE, scale=0.7))
    config = {**AE, "scale": 0.7}
    assert priors.weights.describe(ae) == (
        "autoencoder",
        {**config, "groups": -1},
    )  # no config needed
    loaded = read(save(ae, tmp_path / "ae.safetensors", "autoencoder", config))
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(loaded(x), ae(x))
    denoiser = _perturbed(priors.weights.build("denoiser", DENOISER), seed=1)
    prior = priors.LatentPrior(ae, denoiser)
    both = {"autoencoder": config, "denoiser": DENOISER}
    path = save(prior, tmp_path / "latent.safetensors", "latent", both)
    back = priors.from_path(str(path))
    assert isinstance(back, priors.LatentPrior) and back.pixel_shape == (1, 16, 16)
    z_t, t = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.7])
    torch.testing.assert_close(back(z_t, t), prior(z_t, t))
    torch.testing.assert_close(back.decode(z_t), prior.decode(z_t))
    with pytest.raises(ValueError, match="autoencoder"):
        priors.from_path(str(tmp_path / "ae.safetensors"))  # an autoencoder is not a prior
