r"""The forward process a network is trained on.

:func:`diffuse` draws a time :math:`t \sim U(0, 1)` per row (unless given) and noise
:math:`\epsilon \sim \mathcal{N}(0, I)`, in that order from one generator, and returns the
noised batch

.. math:: x_t = \alpha_t x + \sigma_t \epsilon

with its coefficients shaped to broadcast over ``x``'s trailing dimensions. Regression
targets follow from :mod:`priors.tweedie` (:func:`priors.tweedie.v_from_noise` for the
velocity); every training loop of the package noises its data here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torch import Tensor

from priors.schedules import Schedule

__all__ = ["Noised", "diffuse"]


@dataclass(frozen=True)
class Noised:
    """A noised batch: times :math:`(B,)` (float64), the noise and :math:`x_t` shaped like
    ``x``, and :math:`\\alpha_t, \\sigma_t` of shape :math:`(B, 1, \\dots)` in ``x``'s
    dtype."""

    t: Tensor
    eps: Tensor
    alpha_t: Tensor
    sigma_t: Tensor
    x_t: Tensor


def diffuse(
    schedule: Schedule, x: Tensor, generator: torch.Generator | None, t: Tensor | None = None
) -> Noised:
    """Noises the batch ``x`` :math:`(B, \\dots)` at times ``t`` (drawn uniformly in float64
    when ``None``, one per row), with noise drawn in ``x``'s dtype and device."""
    if t is None:
        t = torch.rand(x.shape[0], generator=generator, dtype=torch.float64, device=x.device)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    alpha_t, sigma_t = (c.to(x.dtype).view(-1, *[1] * (x.ndim - 1)) for c in schedule(t))
    return Noised(t, eps, alpha_t, sigma_t, alpha_t * x + sigma_t * eps)
