r"""Measurement noise models: :math:`y = \mathcal{N}(A(x))` with an explicit generator.

- :class:`GaussianNoise`: :math:`y = z + \sigma_y n`, :math:`n \sim \mathcal{N}(0, I)`
  (:math:`\sigma_y = 0` gives noiseless measurements).
- :class:`PoissonNoise`: :math:`y = g \cdot \mathrm{Poisson}(z / g)` for non-negative
  intensities :math:`z` and gain :math:`g > 0` (mean :math:`z`, variance :math:`g z`).
"""

from __future__ import annotations

import math

import torch

from torch import Tensor

__all__ = ["GaussianNoise", "PoissonNoise"]


def _check_clean(z: Tensor) -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"the clean measurement must be a tensor, got {type(z).__name__}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("the clean measurement contains NaN or Inf")


class GaussianNoise:
    r"""Additive white Gaussian noise of standard deviation ``sigma`` (>= 0)."""

    def __init__(self, sigma: float) -> None:
        if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
        self.sigma = float(sigma)

    def __call__(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_clean(z)
        if self.sigma == 0:
            return z.clone()
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        return z + self.sigma * noise


class PoissonNoise:
    r"""Poisson (shot) noise with gain ``gain`` > 0 on non-negative intensities."""

    def __init__(self, gain: float) -> None:
        if not (isinstance(gain, int | float) and math.isfinite(gain) and gain > 0):
            raise ValueError(f"gain must be a finite number > 0, got {gain!r}")
        self.gain = float(gain)

    def __call__(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_clean(z)
        if bool((z < 0).any()):
            raise ValueError(
                "Poisson noise needs non-negative intensities (map [-1, 1] to [0, 1])"
            )
        return self.gain * torch.poisson(z / self.gain, generator=generator)
