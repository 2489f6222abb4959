r"""DDIM and DDPM (ancestral) sampling.

From :math:`t` to :math:`s < t`, with :math:`\hat x = \hat x(x_t, t)` and
:math:`\hat\epsilon = (x_t - \alpha_t \hat x) / \sigma_t`,

.. math:: x_s = \alpha_s \hat x + \sqrt{\sigma_s^2 - \tau^2}\, \hat\epsilon + \tau z, \qquad
    \tau^2 = \eta^2 \sigma_s^2 \left(1 - \frac{\alpha_t^2 \sigma_s^2}{\alpha_s^2
    \sigma_t^2}\right), \quad z \sim \mathcal{N}(0, I).

:math:`\eta = 0` is the deterministic DDIM (a first-order solver of the probability-flow
ODE); :math:`\eta = 1` draws :math:`x_s` from the exact Gaussian posterior
:math:`q(x_s \mid x_t, x = \hat x)`, which is the ancestral DDPM step with the posterior
variance :math:`\tilde\beta` (Ho et al., 2020, eq. 6-7; Song et al., 2021, eq. 16).

References:
    | Denoising Diffusion Implicit Models (Song et al., 2021)
    | https://arxiv.org/abs/2010.02502
    | Denoising Diffusion Probabilistic Models (Ho et al., 2020)
    | https://arxiv.org/abs/2006.11239
"""

from __future__ import annotations

import math

import torch

from torch import Tensor

import checks

from guided.sampler import Run, Sampler, SamplerState, Step
from priors import GeneratorLike, randn

__all__ = ["DDIM", "DDPM", "ancestral_share", "ddim_coefficients", "ddim_update"]


def ancestral_share(alpha_t: float, sigma_t: float, alpha_s: float, sigma_s: float) -> float:
    r"""The share of :math:`x_s`'s noise variance an ancestral step from :math:`t` draws
    afresh, :math:`1 - \alpha_t^2 \sigma_s^2 / (\alpha_s^2 \sigma_t^2)` (0 when
    :math:`s` is not below :math:`t`): :math:`\tau^2 = \eta^2 \sigma_s^2` times it."""
    ratio = (alpha_t * sigma_s) / (alpha_s * sigma_t)
    return max(0.0, 1.0 - ratio**2)


def ddim_coefficients(
    alpha_t: float, sigma_t: float, alpha_s: float, sigma_s: float, eta: float
) -> tuple[float, float, float]:
    r"""The DDIM transition as :math:`x_s = a \hat x + b x_t + \tau z`: returns
    :math:`(a, b, \tau)` with :math:`b = \sqrt{\sigma_s^2 - \tau^2} / \sigma_t` and
    :math:`a = \alpha_s - b \alpha_t` (the module's formula with
    :math:`\hat\epsilon = (x_t - \alpha_t \hat x) / \sigma_t`)."""
    tau = eta * sigma_s * math.sqrt(ancestral_share(alpha_t, sigma_t, alpha_s, sigma_s))
    b = math.sqrt(max(0.0, sigma_s**2 - tau**2)) / sigma_t
    return alpha_s - b * alpha_t, b, tau


def ddim_update(
    x_t: Tensor,
    x_hat: Tensor,
    alpha_t: float,
    sigma_t: float,
    alpha_s: float,
    sigma_s: float,
    eta: float,
    generator: GeneratorLike = None,
) -> Tensor:
    r"""The DDIM transition of the module docstring from a given :math:`\hat x`, computed
    as :math:`a \hat x + b x_t + \tau z` (:func:`ddim_coefficients`)."""
    a, b, tau = ddim_coefficients(alpha_t, sigma_t, alpha_s, sigma_s, eta)
    x_s = torch.add(a * x_hat, x_t, alpha=b)
    if tau > 0:
        z = randn(x_t.shape, generator, dtype=x_t.dtype, device=x_t.device)
        x_s = torch.add(x_s, z, alpha=tau)
    return x_s


class DDIM(Sampler):
    r"""DDIM sampler with stochasticity :math:`\eta \in [0, 1]` (1 NFE per step).

    With :math:`\eta = 0` on a :class:`~priors.RectifiedSchedule` it is exactly Euler's
    method on the flow-matching ODE :math:`\dot x = \hat u` (:mod:`priors.flow`):
    :math:`x_t + (s - t) \hat u = (1 - s) \hat x + s \hat\epsilon`, the update above, and it
    steps from pure noise (:math:`\alpha_1 = 0`).

    Arguments:
        eta: 0 for the deterministic DDIM, 1 for ancestral DDPM sampling.
    """

    pure_noise = True  # alpha_t enters only as a factor: x_s = a x_hat + b x_t + tau z

    def __init__(self, eta: float = 0.0) -> None:
        self.eta = checks.number(eta, "eta", low=0, high=1)

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        x_hat = run.denoise(x_t, step.t)
        return ddim_update(x_t, x_hat, *step.coefficients, self.eta, run.generator)


class DDPM(DDIM):
    r"""Ancestral DDPM sampling (Ho et al., 2020): :class:`DDIM` with :math:`\eta = 1`.

    Each step samples the Gaussian posterior :math:`q(x_s \mid x_t, x = \hat x)`; on the
    1000-step grid of a :class:`~priors.LinearSchedule` this is the original sampler with
    :math:`\sigma_t^2 = \tilde\beta_t`.

    References:
        | Denoising Diffusion Probabilistic Models (Ho et al., 2020)
        | https://arxiv.org/abs/2006.11239
    """

    def __init__(self) -> None:
        super().__init__(eta=1.0)
