r"""Conversions between the parametrisations of a denoiser's prediction.

With :math:`x_t = \alpha_t x + \sigma_t \epsilon` and Tweedie's formula, the posterior mean
:math:`\hat x = E[x \mid x_t]` determines the noise prediction, the score and the
velocity:

.. math::
    \hat\epsilon = \frac{x_t - \alpha_t \hat x}{\sigma_t}, \qquad
    \nabla_{x_t} \log p_t(x_t) = \frac{\alpha_t \hat x - x_t}{\sigma_t^2}, \qquad
    \hat v = \alpha_t \hat\epsilon - \sigma_t \hat x.

The inverse of the last one, :math:`\hat x = (\alpha_t x_t - \sigma_t \hat v) /
(\alpha_t^2 + \sigma_t^2)`, holds for every schedule (not only variance-preserving ones).
This module is the only place these conversions are written.

References:
    | Progressive Distillation for Fast Sampling of Diffusion Models (Salimans & Ho, 2022)
    | https://arxiv.org/abs/2202.00512
"""

from __future__ import annotations

import torch

from torch import Tensor

__all__ = [
    "append_dims",
    "coefficients",
    "eps_from_x0",
    "score_from_x0",
    "v_from_noise",
    "v_from_x0",
    "x0_from_eps",
    "x0_from_score",
    "x0_from_v",
]


def append_dims(c: Tensor, ndim: int) -> Tensor:
    r"""Reshapes a coefficient of shape :math:`()` or :math:`(B,)` to broadcast against a
    tensor with ``ndim`` dimensions and batch :math:`B` first."""
    if c.ndim > ndim:
        raise ValueError(
            f"cannot broadcast a coefficient of shape {tuple(c.shape)} to {ndim} dims"
        )
    return c.reshape(c.shape + (1,) * (ndim - c.ndim))


def coefficients(x_t: Tensor, *cs: Tensor | float) -> tuple[Tensor, ...] | tuple[float, ...]:
    r"""Coefficients (such as :math:`\alpha_t, \sigma_t`) ready to multiply ``x_t``: one
    time's (numbers, or CPU tensors of shape () that need no gradient, what a sampler passes)
    as Python floats, which broadcast without building tensors; others as tensors on
    ``x_t``'s device and dtype, reshaped by :func:`append_dims`."""
    if all(_is_number(c) for c in cs):
        return tuple(float(c) for c in cs)
    return tuple(append_dims(torch.as_tensor(c).to(x_t.device, x_t.dtype), x_t.ndim) for c in cs)


def _is_number(c: Tensor | float) -> bool:
    if isinstance(c, Tensor):
        return c.ndim == 0 and c.device.type == "cpu" and not c.requires_grad
    return isinstance(c, int | float) and not isinstance(c, bool)


def eps_from_x0(x_t: Tensor, x_hat: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """Noise prediction from the posterior mean."""
    a, s = coefficients(x_t, alpha_t, sigma_t)
    return (x_t - a * x_hat) / s


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """Posterior mean from the noise prediction."""
    a, s = coefficients(x_t, alpha_t, sigma_t)
    return (x_t - s * eps) / a


def score_from_x0(x_t: Tensor, x_hat: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """Score of the noisy marginal from the posterior mean (Tweedie)."""
    a, s = coefficients(x_t, alpha_t, sigma_t)
    return (a * x_hat - x_t) / s**2


def x0_from_score(x_t: Tensor, score: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """Posterior mean from the score (Tweedie's formula)."""
    a, s = coefficients(x_t, alpha_t, sigma_t)
    return (x_t + s**2 * score) / a


def v_from_x0(x_t: Tensor, x_hat: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """Velocity prediction from the posterior mean."""
    a, s = coefficients(x_t, alpha_t, sigma_t)
    return a * (x_t - a * x_hat) / s - s * x_hat


def v_from_noise(x: Tensor, eps: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    r"""The velocity :math:`v = \alpha_t \epsilon - \sigma_t x` of a clean sample and the
    noise that made :math:`x_t` from it: the regression target of v-prediction training."""
    a, s = coefficients(x, alpha_t, sigma_t)
    return a * eps - s * x


def x0_from_v(x_t: Tensor, v: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """Posterior mean from the velocity prediction."""
    a, s = coefficients(x_t, alpha_t, sigma_t)
    return (a * x_t - s * v) / (a**2 + s**2)
