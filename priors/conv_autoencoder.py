r"""Our own convolutional autoencoder for latent priors (a small KL-regularised one).

The first stage of a latent diffusion model (Rombach et al., 2022, sec. 3.1):
an encoder :math:`E` that downsamples images by a factor :math:`f = 2^{L - 1}` into
``latent_channels`` channels and a decoder :math:`D` back, trained to reconstruct with a
slight Kullback–Leibler penalty towards a standard normal latent (their "KL-reg.", weight
:math:`10^{-6}` in the authors' ``configs/autoencoder`` files; our ×4, 3-channel default is
the shape of their ``kl-f4``), so that the latent space is smooth enough for
a diffusion model. The encoder outputs the mean and log-variance of a diagonal Gaussian
:math:`q(z \mid x)`; training decodes a draw from it, :meth:`~priors.Autoencoder.encode`
returns its mean (deterministic, as the latent methods need). As in Stable Diffusion, the
latents the prior sees are scaled by a constant ``scale`` (there 0.18215; here set after
training to one over the standard deviation of the training latents), and decoding divides
by it.

Departures from the authors' autoencoders: no perceptual (LPIPS) or adversarial loss
(an :math:`\ell_1` reconstruction loss only, so decoded details are blurrier than theirs),
no attention in the middle block, and per-pixel normalisation (``groups=-1``,
:class:`~priors.unet.PixelNorm`) instead of group normalisation, so that, like the natural
prior, the network is local and runs on any image size divisible by :math:`f` (a run uses
:meth:`with_shape` for another size).

References:
    | High-Resolution Image Synthesis with Latent Diffusion Models (Rombach et al., 2022)
    | https://arxiv.org/abs/2112.10752
    | Auto-Encoding Variational Bayes (Kingma & Welling, 2014) https://arxiv.org/abs/1312.6114
"""

from __future__ import annotations

import math

from collections.abc import Sequence

from torch import Tensor, nn

import checks

from priors.autoencoder import Autoencoder
from priors.unet import _norm

__all__ = ["ConvAutoencoder"]


class _Block(nn.Module):
    """A residual block without conditioning: norm, SiLU, conv, twice, plus the input."""

    def __init__(self, channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(channels, groups),
            nn.SiLU(),
            nn.Conv2d(channels, out_channels, 3, padding=1),
            _norm(out_channels, groups),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = (
            nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class ConvAutoencoder(Autoencoder):
    r"""A convolutional KL-regularised autoencoder (see the module).

    Arguments:
        shape: One image's shape :math:`(C, H, W)`, with :math:`H, W` divisible by the factor
            :math:`2^{L - 1}`.
        channels: Feature channels per resolution level (:math:`L` levels, the first at full
            resolution).
        latent_channels: The latent's channels.
        blocks: Residual blocks per level.
        groups: Normalisation (-1: per pixel, 0: none, > 0: group normalisation).
        scale: The constant the latents are multiplied by (:math:`z = s \mu(x)`; decoding
            divides by it).
    """

    def __init__(
        self,
        shape: Sequence[int],
        channels: Sequence[int] = (32, 64, 128),
        latent_channels: int = 3,
        blocks: int = 1,
        groups: int = -1,
        scale: float = 1.0,
    ) -> None:
        channels = [checks.integer(c, "channels", low=1) for c in channels]
        if not channels:
            raise ValueError("channels must name at least one level")
        latent_channels = checks.integer(latent_channels, "latent_channels", low=1)
        blocks = checks.integer(blocks, "blocks", low=1)
        if not (math.isfinite(float(scale)) and float(scale) > 0):
            raise ValueError(f"scale must be finite and positive, got {scale}")
        factor = 2 ** (len(channels) - 1)
        if len(shape) != 3 or any(int(n) % factor for n in shape[1:]):
            raise ValueError(
                f"shape must be (C, H, W) with H and W divisible by {factor} (the factor of "
                f"{len(channels)} levels), got {tuple(shape)}"
            )
        c, h, w = (int(n) for n in shape)
        super().__init__((c, h, w), (latent_channels, h // factor, w // factor))
        self.arguments = {
            "channels": channels,
            "latent_channels": latent_channels,
            "blocks": blocks,
            "groups": int(groups),
        }
        self.factor = factor
        self.scale = float(scale)
        down: list[nn.Module] = [nn.Conv2d(c, channels[0], 3, padding=1)]
        for i, ch in enumerate(channels):
            down += [_Block(ch, ch, groups) for _ in range(blocks)]
            if i < len(channels) - 1:
                down.append(nn.Conv2d(ch, channels[i + 1], 3, stride=2, padding=1))
        down += [_norm(channels[-1], groups), nn.SiLU()]
        down.append(nn.Conv2d(channels[-1], 2 * latent_channels, 3, padding=1))
        self.encoder = nn.Sequential(*down)
        up: list[nn.Module] = [nn.Conv2d(latent_channels, channels[-1], 3, padding=1)]
        for i in reversed(range(len(channels))):
            up += [_Block(channels[i], channels[i], groups) for _ in range(blocks)]
            if i > 0:
                up += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(channels[i], channels[i - 1], 3, padding=1),
                ]
        up += [_norm(channels[0], groups), nn.SiLU(), nn.Conv2d(channels[0], c, 3, padding=1)]
        self.decoder = nn.Sequential(*up)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""The mean and log-variance of :math:`q(z \mid x)` before scaling (unchecked: any
        size divisible by the factor; the training app's entry)."""
        dtype = next(self.parameters()).dtype
        mean, log_var = self.encoder(x.to(dtype)).chunk(2, dim=1)
        return mean.to(x.dtype), log_var.clamp(-30, 20).to(x.dtype)

    def reconstruct(self, z: Tensor) -> Tensor:
        """The decoder on unscaled latents (unchecked: the training app's entry)."""
        dtype = next(self.parameters()).dtype
        return self.decoder(z.to(dtype)).to(z.dtype)

    def apply_encoder(self, x: Tensor) -> Tensor:
        return self.scale * self.posterior(x)[0]

    def apply_decoder(self, z: Tensor) -> Tensor:
        return self.reconstruct(z / self.scale)

    def with_shape(self, shape: Sequence[int]) -> ConvAutoencoder:
        """The same autoencoder (the same weights, shared) for images of another size."""
        other = ConvAutoencoder(shape, **self.arguments, scale=self.scale)
        if other.shape[0] != self.shape[0]:
            raise ValueError(f"shape must have {self.shape[0]} channel(s), got {tuple(shape)}")
        other.encoder, other.decoder = self.encoder, self.decoder
        return other.train(self.training)

    def kl(self, mean: Tensor, log_var: Tensor) -> Tensor:
        r""":math:`\mathrm{KL}(q(z \mid x) \,\|\, \mathcal{N}(0, I))` per row (summed over the
        latent)."""
        return 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).flatten(1).sum(1)
