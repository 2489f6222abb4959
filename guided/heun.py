r"""Heun's second-order method for the probability-flow ODE (Karras et al., 2022, Alg. 1).

In the scaled variables :math:`\tilde x = x / \alpha` and :math:`\tilde\sigma = \sigma /
\alpha` the probability-flow ODE of any schedule reads

.. math:: \frac{d\tilde x}{d\tilde\sigma} = \frac{\tilde x - \hat x}{\tilde\sigma}.

A step from :math:`t` to :math:`s` takes an Euler step with slope
:math:`d_t = (\tilde x_t - \hat x_t) / \tilde\sigma_t`, then, unless
:math:`\tilde\sigma_s = 0`, corrects it with the slope at the Euler point:
:math:`\tilde x_s = \tilde x_t + (\tilde\sigma_s - \tilde\sigma_t)(d_t + d_s) / 2`.
Two network evaluations per step (one for a last step to :math:`\sigma_s = 0`).

:class:`FlowHeun` is Heun's method on the same ODE written in the schedule's own time,

.. math:: \frac{dx_t}{dt} = \dot\alpha_t \hat x + \dot\sigma_t \hat\epsilon = \hat u(x_t, t),

the sampling ODE of flow matching on a :class:`~priors.RectifiedSchedule` (:math:`\hat u =
\hat\epsilon - \hat x`): :math:`x_s = x_t + (s - t)(\hat u(x_t, t) + \hat u(\tilde x_s, s)) / 2`
with the Euler point :math:`\tilde x_s = x_t + (s - t) \hat u(x_t, t)`, and the Euler step
alone on a last step to :math:`\sigma_s = 0`, as diffusers' ``FlowMatchHeunDiscreteScheduler``
does. The two Heun methods differ (the variables differ; only their Euler steps, DDIM, agree),
and only this one steps from pure noise (:math:`\alpha_1 = 0`, where :math:`\tilde\sigma`
is infinite).

References:
    | Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022)
    | https://arxiv.org/abs/2206.00364
"""

from __future__ import annotations

from torch import Tensor

from guided.sampler import Run, Sampler, SamplerState, Step
from priors.tweedie import flow_from_x0

__all__ = ["FlowHeun", "Heun"]


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


class FlowHeun(Sampler):
    r"""Deterministic Heun sampler on the velocity ODE :math:`\dot x_t = \hat u(x_t, t)` in
    the schedule's time (see the module), 2 NFE per step, 1 on a last step to
    :math:`\sigma_s = 0`; steps from pure noise."""

    pure_noise = True

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        alpha_t, sigma_t, alpha_s, sigma_s = step.coefficients
        dt = float(step.s - step.t)
        u_t = flow_from_x0(
            x_t, run.denoise(x_t, step.t), alpha_t, sigma_t, *run.schedule.derivatives(step.t)
        )
        x_s = x_t + dt * u_t
        if sigma_s > 0:
            u_s = flow_from_x0(
                x_s, run.denoise(x_s, step.s), alpha_s, sigma_s, *run.schedule.derivatives(step.s)
            )
            x_s = x_t + dt * (u_t + u_s) / 2
        return x_s
