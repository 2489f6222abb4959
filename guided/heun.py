r"""Heun's second-order method for the probability-flow ODE (Karras et al., 2022, Alg. 1).

In the scaled variables :math:`\tilde x = x / \alpha` and :math:`\tilde\sigma = \sigma /
\alpha` the probability-flow ODE of any schedule reads

.. math:: \frac{d\tilde x}{d\tilde\sigma} = \frac{\tilde x - \hat x}{\tilde\sigma}.

A step from :math:`t` to :math:`s` takes an Euler step with slope
:math:`d_t = (\tilde x_t - \hat x_t) / \tilde\sigma_t`, then, unless
:math:`\tilde\sigma_s = 0`, corrects it with the slope at the Euler point:
:math:`\tilde x_s = \tilde x_t + (\tilde\sigma_s - \tilde\sigma_t)(d_t + d_s) / 2`.
Two network evaluations per step (one for a last step to :math:`\sigma_s = 0`).

References:
    | Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022)
    | https://arxiv.org/abs/2206.00364
"""

from __future__ import annotations

from torch import Tensor

from guided.sampler import Run, Sampler, SamplerState, Step

__all__ = ["Heun"]


class Heun(Sampler):
    r"""Deterministic Heun sampler (Karras et al., 2022, Algorithm 1), 2 NFE per step."""

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        alpha_t, sigma_t, alpha_s, sigma_s = step.coefficients
        st, ss = sigma_t / alpha_t, sigma_s / alpha_s
        xt = x_t / alpha_t
        d_t = (xt - run.denoise(x_t, step.t)) / st
        xs = xt + (ss - st) * d_t
        if ss > 0:
            d_s = (xs - run.denoise(alpha_s * xs, step.s)) / ss
            xs = xt + (ss - st) * (d_t + d_s) / 2
        return alpha_s * xs
