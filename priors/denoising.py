r"""A diffusion prior as a Gaussian denoiser.

Given :math:`y = x + \sigma \epsilon` with :math:`\epsilon \sim \mathcal{N}(0, I)`, the
diffusion time :math:`t` whose noise-to-signal ratio :math:`\sigma_t / \alpha_t` is
:math:`\sigma` (that is, :math:`\lambda_t = -\log \sigma`, through
:meth:`~priors.schedules.Schedule.time_of`) makes :math:`\alpha_t y` distributed exactly
as :math:`x_t`, so

.. math:: E[x \mid y] = \hat x(\alpha_t y, t).

This is the one-step denoiser that plug-and-play methods and the denoising benchmarks use.
A level outside the schedule's range maps to its nearest end (:math:`t = 0` or 1; a level
of 0 to :math:`t = 0`), where the result is no longer the posterior mean at
:math:`\sigma`.
"""

from __future__ import annotations

from typing import Any

import torch

from torch import Tensor

from priors.denoiser import Denoiser
from priors.schedules import Schedule
from priors.tweedie import append_dims

__all__ = ["denoise", "noise_time"]


def noise_time(schedule: Schedule, sigma: float | Tensor) -> Tensor:
    r"""The time :math:`t` with :math:`\sigma_t / \alpha_t = \sigma` (float64, the shape of
    ``sigma``)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
        raise ValueError(f"sigma must be finite and at least 0, got {sigma}")
    return schedule.time_of(-torch.log(sigma))


def denoise(prior: Denoiser, y: Tensor, sigma: float | Tensor, **cond: Any) -> Tensor:
    r""":math:`E[x \mid y = x + \sigma \epsilon]` under ``prior`` (see the module).

    Arguments:
        prior: The diffusion prior.
        y: Noisy signals :math:`(B, ...)`.
        sigma: The noise standard deviation: a number, a 0-dim tensor or one per row.
        cond: Conditioning keywords passed to the prior.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=y.device)
    if sigma.numel() not in (1, y.shape[0]):
        raise ValueError(
            f"sigma must be a number or one per row of y ({y.shape[0]}), got shape "
            f"{tuple(sigma.shape)}"
        )
    sigma = sigma.reshape(()) if sigma.numel() == 1 else sigma.reshape(y.shape[0])
    t = noise_time(prior.schedule, sigma)
    alpha_t = append_dims(prior.schedule(t)[0].to(y.dtype), y.ndim)
    return prior(alpha_t * y, t, **cond)
