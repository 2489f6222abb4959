"""The natural-image prior's data: the held-out photographs never reach training, crops are
reproducible and in range, and colour is reduced to BT.601 luma; the shipped latent prior
keeps held-out crops through its autoencoder and denoises their latents."""

import pytest
import torch

import priors

from experiments.shared.photographs import HELD_OUT, TRAINING, Photographs, luma, photograph


def test_no_held_out_photograph_is_a_training_one():
    held = {p.name for p in HELD_OUT}
    assert held == {"astronaut", "coffee", "china"}
    assert not held & {p.name for p in TRAINING}
    train = Photographs("train", crop=16)
    assert not held & set(train.names)
    for h in held:  # not under another name either (scikit-image's cat is chelsea)
        grey = photograph(h)
        for image in train.images:
            if image.shape == grey.shape:
                assert not torch.equal(image, grey * 2 - 1)


def test_every_photograph_names_its_source_and_licence():
    for p in TRAINING + HELD_OUT:
        assert p.source in ("scikit-image", "scikit-learn") and p.licence


def test_training_crops_are_reproducible_and_in_range():
    data = Photographs("train", crop=24, min_scale=0.5)
    a, label = data.sample(12, torch.Generator().manual_seed(3))
    b, _ = data.sample(12, torch.Generator().manual_seed(3))
    assert a.shape == (12, 1, 24, 24) and torch.equal(a, b) and not label.any()
    assert a.min() >= -1 and a.max() <= 1 and a.std() > 0.05


def test_the_held_out_grid():
    x, _ = Photographs("test", crop=128).evaluation()
    # astronaut 512x512: 16 crops; coffee 400x600: 3x4; china 427x640: 3x5
    assert x.shape == (16 + 12 + 15, 1, 128, 128)


def test_luma_weights():
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 2, 2)
    torch.testing.assert_close(luma(rgb), torch.full((1, 2, 2), 0.299))
    grey = torch.rand(3, 4, 4)[:1].expand(3, 4, 4)
    torch.testing.assert_close(luma(grey), grey[:1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "val"}, "split must be one of"),
        ({"crop": 1}, "crop must be at least 2"),
        ({"min_scale": 0.0}, "min_scale"),
        ({"split": "test", "crop": 500}, "larger than the photographs"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Photographs(**kwargs)


def test_unknown_and_grey_photographs_are_refused():
    with pytest.raises(ValueError, match="photograph must be one of"):
        photograph("lena")
    with pytest.raises(ValueError, match="has no colour"):
        photograph("camera", colour=True)
    assert photograph("coffee", colour=True).shape == (3, 400, 600)


def test_the_shipped_latent_prior_decodes_its_encodings_and_denoises_its_latents():
    """natural-latent pairs the shipped autoencoder with a latent denoiser: held-out crops
    survive encoding and decoding, and the denoiser beats the noisy latents by far."""
    prior = priors.load("natural-latent")
    assert isinstance(prior, priors.LatentPrior)
    assert prior.shape == (3, 32, 32) and prior.pixel_shape == (1, 128, 128)
    x = Photographs("test", crop=128).evaluation()[0][::7]  # 7 crops of the 3 photographs
    with torch.no_grad():
        z = prior.encode(x)
        back = prior.decode(z).clamp(-1, 1)
        psnr = 10 * torch.log10(4 / (back - x).pow(2).mean(dim=(1, 2, 3)))
        assert float(psnr.mean()) > 26 and float(psnr.min()) > 17, psnr
        g = torch.Generator().manual_seed(0)
        t = torch.full((len(z),), 0.5)
        alpha, sigma = prior.schedule(t)
        z_t = alpha[0] * z + sigma[0] * torch.randn(z.shape, generator=g)
        error = (prior(z_t, t) - z).pow(2).mean()
        noisy = (z_t / alpha[0] - z).pow(2).mean()
    assert float(error) < 0.25 * float(noisy), (error, noisy)
    with pytest.raises(ValueError, match="not a denoiser"):
        priors.load("natural-autoencoder")  # the first stage alone is no prior
