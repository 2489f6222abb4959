r"""The autoencoder of a latent prior.

A latent diffusion model (Rombach et al., 2022) pairs an encoder :math:`E` from images to
latents and a decoder :math:`D` back with a denoiser of the latents; images are
:math:`D(z)` for latents :math:`z` drawn from the latent prior. :class:`Autoencoder` is the
interface a :class:`~priors.LatentPrior` holds: calls are checked (shape, real floating
dtype, finite values; a decoder that turns a finite latent into NaN or Inf is named) and
counted in the run's :class:`~priors.Cost` (``encoder`` and ``decoder`` rows, beside the
network's evaluations), since decoding a latent often costs as much as a network evaluation.
What back-propagates through the autoencoder records its VJPs itself
(:func:`priors.cost.record`, ``decoder_vjp_rows`` / ``encoder_vjp_rows``).

References:
    | High-Resolution Image Synthesis with Latent Diffusion Models (Rombach et al., 2022)
    | https://arxiv.org/abs/2112.10752
"""

from __future__ import annotations

import abc

from collections.abc import Sequence

from torch import Tensor, nn

import checks

from priors.cost import record

__all__ = ["Autoencoder"]


def _sizes(shape: Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(shape, str | bytes) or not isinstance(shape, Sequence) or not shape:
        raise TypeError(f"{name} must be a non-empty sequence of sizes, got {shape!r}")
    return tuple(checks.integer(n, name, low=1) for n in shape)


class Autoencoder(nn.Module, abc.ABC):
    r"""An encoder :math:`E` from images of shape ``shape`` to latents of shape
    ``latent_shape`` and a decoder :math:`D` back (see the module).

    Subclasses implement :meth:`apply_encoder` and :meth:`apply_decoder` on checked inputs;
    :meth:`encode` and :meth:`decode` check, count and call them. Calling the autoencoder
    reconstructs, :math:`D(E(x))`.

    Arguments:
        shape: One image's shape, e.g. :math:`(C, H, W)`.
        latent_shape: One latent's shape.
    """

    def __init__(self, shape: Sequence[int], latent_shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = _sizes(shape, "shape")
        self.latent_shape = _sizes(latent_shape, "latent_shape")

    @abc.abstractmethod
    def apply_encoder(self, x: Tensor) -> Tensor:
        r""":math:`E(x)` for a checked batch of images, shape :math:`(B, *latent\_shape)`."""

    @abc.abstractmethod
    def apply_decoder(self, z: Tensor) -> Tensor:
        r""":math:`D(z)` for a checked batch of latents, shape :math:`(B, *shape)`."""

    def encode(self, x: Tensor) -> Tensor:
        r"""The latents :math:`E(x)` of images ``x``, :math:`(B, *shape) \to (B,
        *latent\_shape)` (one encoder pass per row)."""
        self._check(x, self.shape, "x", "images")
        record(encoder_rows=x.shape[0])
        return self._checked(self.apply_encoder(x), x, self.latent_shape, "encoder")

    def decode(self, z: Tensor) -> Tensor:
        r"""The images :math:`D(z)` of latents ``z``, :math:`(B, *latent\_shape) \to (B,
        *shape)` (one decoder pass per row)."""
        self._check(z, self.latent_shape, "z", "latents")
        record(decoder_rows=z.shape[0])
        return self._checked(self.apply_decoder(z), z, self.shape, "decoder")

    def forward(self, x: Tensor) -> Tensor:
        r"""The reconstruction :math:`D(E(x))`."""
        return self.decode(self.encode(x))

    def _check(self, x: Tensor, shape: tuple[int, ...], name: str, what: str) -> None:
        checks.real_tensor(x, name)
        if x.ndim < 1 or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
            raise ValueError(
                f"{type(self).__name__} takes {what} of shape (B, *{shape}) with B >= 1; {name} "
                f"has shape {tuple(x.shape)}"
            )
        checks.finite(x, name)

    def _checked(self, out: Tensor, x: Tensor, shape: tuple[int, ...], part: str) -> Tensor:
        if tuple(out.shape) != (x.shape[0], *shape):
            raise ValueError(
                f"{type(self).__name__}'s {part} returned shape {tuple(out.shape)}, expected "
                f"{(x.shape[0], *shape)}"
            )
        return checks.finite(
            out, f"{type(self).__name__}'s {part} output for a finite input", FloatingPointError
        )
