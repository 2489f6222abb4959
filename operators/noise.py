r"""Measurement noise models: :math:`y = \mathcal{N}(A(x))` with an explicit generator.

- :class:`GaussianNoise`: :math:`y = z + \sigma_y n`, :math:`n \sim \mathcal{N}(0, I)`
  (:math:`\sigma_y = 0` gives noiseless measurements).
- :class:`PoissonNoise`: :math:`y = g \cdot \mathrm{Poisson}(z / g)` for non-negative
  intensities :math:`z` and gain :math:`g > 0` (mean :math:`z`, variance :math:`g z`).
"""

from __future__ import annotations

import torch

from torch import Tensor

import checks

__all__ = ["GaussianNoise", "PoissonNoise"]


def _check_clean(z: Tensor) -> None:
    checks.finite(checks.real_tensor(z, "the clean measurement"), "the clean measurement")


class GaussianNoise:
    r"""Additive white Gaussian noise of standard deviation ``sigma`` (>= 0)."""

    def __init__(self, sigma: float) -> None:
        self.sigma = checks.number(sigma, "sigma", low=0)

    def __call__(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_clean(z)
        if self.sigma == 0:
            return z.clone()
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        return z + self.sigma * noise


class PoissonNoise:
    r"""Poisson (shot) noise with gain ``gain`` > 0 on non-negative intensities."""

    def __init__(self, gain: float) -> None:
        self.gain = checks.number(gain, "gain", low=0, open_low=True)

    def __call__(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_clean(z)
        if bool((z < 0).any()):
            raise ValueError(
                "Poisson noise needs non-negative intensities (map [-1, 1] to [0, 1])"
            )
        return self.gain * torch.poisson(z / self.gain, generator=generator)
