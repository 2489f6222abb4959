r"""A latent prior: an autoencoder and a denoiser of its latents.

A latent diffusion model draws latents :math:`z` from a diffusion prior and images as
:math:`x = D(z)` (Rombach et al., 2022). :class:`LatentPrior` is that pair behind the
denoiser contract: as a :class:`~priors.Denoiser` it **is the latent denoiser**
(:math:`E[z \mid z_t]` under the latent schedule), so every sampler draws latents from it
unchanged, and :meth:`LatentPrior.decode` turns them into images. Measurements stay in pixel
space: a method that measures :math:`A(x)` sees :math:`A(D(z))` on latents, which is what the
latent methods of :mod:`guided` (``LatentDPS``, ``PSLD``, ``ReSample``, ``LatentDAPS``)
build from the prior they are run with; a pixel method given a latent prior is refused at
the start of its run with an error naming them (:func:`latent_of` finds the latent prior
under wrappers such as classifier-free guidance).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from priors.autoencoder import Autoencoder
from priors.denoiser import Denoiser, Wrapper

__all__ = ["LatentPrior", "latent_of"]


class LatentPrior(Wrapper):
    r"""A denoiser of an autoencoder's latents with the autoencoder (see the module).

    Calls are the latent denoiser's (counted as its network evaluations); ``shape`` is the
    latent shape and ``pixel_shape`` the image shape.

    Arguments:
        autoencoder: The :class:`~priors.Autoencoder` whose latents the denoiser models.
        latent: The denoiser of the latents (its ``shape``, where it has one, must be the
            autoencoder's ``latent_shape``).
    """

    def __init__(self, autoencoder: Autoencoder, latent: Denoiser) -> None:
        if not isinstance(autoencoder, Autoencoder):
            raise TypeError(
                f"autoencoder must be a priors.Autoencoder, got {type(autoencoder).__name__}"
            )
        if not isinstance(latent, Denoiser):
            raise TypeError(f"latent must be a priors.Denoiser, got {type(latent).__name__}")
        if isinstance(latent, LatentPrior):
            raise TypeError("latent is already a LatentPrior: a latent prior takes its denoiser")
        shape = getattr(latent, "shape", None)
        if shape is not None and tuple(shape) != autoencoder.latent_shape:
            raise ValueError(
                f"the latent denoiser's samples have shape {tuple(shape)}, the autoencoder's "
                f"latents {autoencoder.latent_shape}: they must describe the same latents"
            )
        super().__init__(latent)
        self.autoencoder = autoencoder
        self.shape = autoencoder.latent_shape
        self.pixel_shape = autoencoder.shape

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self.prior(x_t, t, **cond)

    def decode(self, z: Tensor) -> Tensor:
        r"""Images :math:`D(z)` of latents, :math:`(B, *shape) \to (B, *pixel\_shape)`."""
        return self.autoencoder.decode(z)

    def encode(self, x: Tensor) -> Tensor:
        r"""Latents :math:`E(x)` of images, :math:`(B, *pixel\_shape) \to (B, *shape)`."""
        return self.autoencoder.encode(x)


def latent_of(denoiser: Denoiser) -> LatentPrior | None:
    """The :class:`LatentPrior` that ``denoiser`` is or wraps (through the ``prior`` of
    wrappers such as classifier-free guidance or acceleration), or None for a pixel prior."""
    seen: set[int] = set()
    node: Any = denoiser
    while isinstance(node, Denoiser) and id(node) not in seen:
        if isinstance(node, LatentPrior):
            return node
        seen.add(id(node))
        node = getattr(node, "prior", None)
    return None
