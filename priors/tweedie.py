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

Flow-matching networks predict instead the velocity of :math:`x_t` along a fixed
:math:`(x, \epsilon)`, :math:`u = \dot\alpha_t x + \dot\sigma_t \epsilon` (Lipman et al.,
2023; on :class:`~priors.RectifiedSchedule` :math:`u = \epsilon - x`), whose regression
target's mean is :math:`\hat u = \dot\alpha_t \hat x + \dot\sigma_t \hat\epsilon`, so

.. math:: \hat x = \frac{\sigma_t \hat u - \dot\sigma_t x_t}
    {\dot\alpha_t \sigma_t - \dot\sigma_t \alpha_t},

whose denominator is :math:`-\alpha_t^2 \, d(\sigma_t / \alpha_t) / dt` where
:math:`\alpha_t > 0`, negative for any schedule whose noise level rises, and
:math:`\dot\alpha_t \sigma_t` at :math:`\alpha_t = 0`. The formula thus holds at pure noise;
on the rectified schedule it reads :math:`\hat x = x_t - t \hat u` at every
:math:`t \in [0, 1]`.

Tweedie's formula for a measurement, :math:`E[x \mid x_t, y] = \hat x + (\sigma_t^2 /
\alpha_t) \nabla_{x_t} \log p(y \mid x_t)`, is written once, in :func:`likelihood_gain`.
This module is the only place these conversions are written.

References:
    | Flow Matching for Generative Modeling (Lipman et al., 2023)
    | https://arxiv.org/abs/2210.02747
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
    "flow_from_noise",
    "flow_from_x0",
    "likelihood_gain",
    "score_from_x0",
    "v_from_noise",
    "v_from_x0",
    "x0_from_eps",
    "x0_from_flow",
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


def flow_from_x0(
    x_t: Tensor,
    x_hat: Tensor,
    alpha_t: Tensor,
    sigma_t: Tensor,
    d_alpha: Tensor,
    d_sigma: Tensor,
) -> Tensor:
    r"""The flow-matching velocity :math:`\hat u = \dot\alpha_t \hat x + \dot\sigma_t
    \hat\epsilon` from the posterior mean, with the schedule's time derivatives
    (:meth:`~priors.Schedule.derivatives`). Where :math:`\sigma_t = 0` (clean data)
    :math:`\hat\epsilon` is taken as its limit 0."""
    a, s, da, ds = coefficients(x_t, alpha_t, sigma_t, d_alpha, d_sigma)
    if isinstance(s, float):
        eps = (x_t - a * x_hat) / s if s > 0 else torch.zeros_like(x_t)
    else:
        eps = torch.where(s > 0, (x_t - a * x_hat) / torch.where(s > 0, s, 1), 0)
    return da * x_hat + ds * eps


def flow_from_noise(x: Tensor, eps: Tensor, d_alpha: Tensor, d_sigma: Tensor) -> Tensor:
    r"""The velocity :math:`u = \dot\alpha_t x + \dot\sigma_t \epsilon` of :math:`x_t` along
    a clean sample and its noise: the regression target of flow-matching training (on the
    rectified schedule :math:`u = \epsilon - x`)."""
    da, ds = coefficients(x, d_alpha, d_sigma)
    return da * x + ds * eps


def x0_from_flow(
    x_t: Tensor,
    u: Tensor,
    alpha_t: Tensor,
    sigma_t: Tensor,
    d_alpha: Tensor,
    d_sigma: Tensor,
) -> Tensor:
    r"""Posterior mean from the flow-matching velocity (the module's formula): defined at
    :math:`\alpha_t = 0` (pure noise); where :math:`\sigma_t = 0` it is :math:`x_t /
    \alpha_t` whatever the velocity."""
    a, s, da, ds = coefficients(x_t, alpha_t, sigma_t, d_alpha, d_sigma)
    if isinstance(s, float):
        return (s * u - ds * x_t) / (da * s - ds * a) if s > 0 else x_t / a
    noisy = s > 0  # the other branch's denominators are made safe: no inf reaches a gradient
    flow = (s * u - ds * x_t) / torch.where(noisy, da * s - ds * a, 1)
    return torch.where(noisy, flow, x_t / torch.where(noisy, 1, a))


def likelihood_gain(alpha_t: Tensor | float, sigma_t: Tensor | float) -> Tensor | float:
    r"""The factor :math:`\sigma_t^2 / \alpha_t` of Tweedie's formula :math:`E[x \mid x_t, y] =
    \hat x + (\sigma_t^2 / \alpha_t) \nabla_{x_t} \log p(y \mid x_t)`, as a float for a float
    or a tensor for a tensor.

    Where :math:`\alpha_t = 0` (pure noise, :math:`t = 1` on a
    :class:`~priors.RectifiedSchedule`) it is 0: :math:`x_t` then carries no information on
    :math:`x`, the likelihood score vanishes and the product :math:`\infty \cdot 0` is not
    defined by it, so the correction is dropped and the measurement first acts at the next
    time. (The exact :math:`E[x \mid x_1, y] = E[x \mid y]` is not reachable through a score.)
    """
    if isinstance(alpha_t, Tensor) or isinstance(sigma_t, Tensor):
        alpha_t, sigma_t = torch.as_tensor(alpha_t), torch.as_tensor(sigma_t)
        zero = alpha_t == 0
        return torch.where(zero, 0, sigma_t**2 / torch.where(zero, 1, alpha_t))
    return sigma_t**2 / alpha_t if alpha_t != 0 else 0.0
