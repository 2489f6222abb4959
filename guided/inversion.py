r"""DDIM inversion: run the deterministic DDIM map backwards, from data towards noise.

Deterministic DDIM takes :math:`x_s` to :math:`x_t` (:math:`t < s`) by
:math:`x_t = \alpha_t \hat x_s + \sigma_t \hat\epsilon_s` with
:math:`\hat\epsilon_s = \hat\epsilon(x_s, s)`. Inverting it asks for the
:math:`\hat\epsilon` that solves

.. math:: x_s = \frac{\alpha_s}{\alpha_t} (x_t - \sigma_t \hat\epsilon) + \sigma_s
    \hat\epsilon, \qquad \hat\epsilon = \hat\epsilon(x_s, s).

Classic inversion (Song et al., 2021; Dhariwal & Nichol, 2021) approximates
:math:`\hat\epsilon \approx \hat\epsilon(x_t, t)`, which is first-order accurate in the step.
``iterations`` fixed-point refinements :math:`\hat\epsilon \leftarrow \hat\epsilon(x_s, s)`
then solve the equation itself, so DDIM sampling on the same grid returns the input up to
the fixed-point residual (Pan et al., 2023). At :math:`\sigma_t = 0` the first guess is
:math:`\hat\epsilon(\alpha_s x_t / \alpha_t, s)`.

References:
    | Denoising Diffusion Implicit Models (Song et al., 2021)
    | https://arxiv.org/abs/2010.02502
    | Effective Real Image Editing with Accelerated Iterative Diffusion Inversion
    | (Pan et al., 2023) https://arxiv.org/abs/2309.04907
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

import checks

from guided.sampler import Run, Sampler, SamplerState, Step
from priors.tweedie import eps_from_x0

__all__ = ["DDIMInversion"]


class DDIMInversion(Sampler):
    r"""Deterministic DDIM inversion along an increasing time grid
    (``ts.flip(0)`` of the sampling grid), 1 + ``iterations`` NFE per step.

    Arguments:
        iterations: Fixed-point refinements per step; 0 is classic DDIM inversion.
    """

    increasing: ClassVar[bool] = True
    pure_noise: ClassVar[bool] = True  # divides by alpha_t at t < s <= 1 only, where alpha_t > 0

    def __init__(self, iterations: int = 0) -> None:
        self.iterations = checks.integer(iterations, "iterations", low=0)

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        alpha_t, sigma_t, alpha_s, sigma_s = step.coefficients
        t, s = step.t, step.s

        def eps_at(x: Tensor, time: Tensor, alpha: float, sigma: float) -> Tensor:
            return eps_from_x0(x, run.denoise(x, time), alpha, sigma)

        def x_s_of(eps: Tensor) -> Tensor:
            return alpha_s / alpha_t * (x_t - sigma_t * eps) + sigma_s * eps

        if sigma_t > 0:
            eps = eps_at(x_t, t, alpha_t, sigma_t)
        else:
            eps = eps_at(alpha_s / alpha_t * x_t, s, alpha_s, sigma_s)
        for _ in range(self.iterations):
            eps = eps_at(x_s_of(eps), s, alpha_s, sigma_s)
        return x_s_of(eps)
