r"""DPM-Solver++(2M): a second-order multistep solver of the probability-flow ODE in the
data-prediction form.

With :math:`\lambda = \log(\alpha / \sigma)` and :math:`h = \lambda_s - \lambda_t`, one step
from :math:`t` to :math:`s` is

.. math:: x_s = \frac{\sigma_s}{\sigma_t} x_t + \alpha_s (1 - e^{-h}) D, \qquad
    D = \left(1 + \frac{1}{2r}\right) \hat x_t - \frac{1}{2r} \hat x_{t'}, \quad
    r = \frac{h'}{h},

where :math:`t'` is the previous grid time and :math:`h'` the previous step's
:math:`h`. The first step, and a last step to :math:`\sigma_s = 0` (where :math:`h` is
infinite), use the first-order :math:`D = \hat x_t` (DDIM). One network evaluation per
step.

References:
    | DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models
    | (Lu et al., 2022) https://arxiv.org/abs/2211.01095 (Algorithm 2)
"""

from __future__ import annotations

import math

from dataclasses import dataclass

from torch import Tensor

from guided.sampler import Run, Sampler, SamplerState, Step

__all__ = ["DPMSolver", "History"]


@dataclass
class History(SamplerState):
    """The previous step's denoised estimate and log-SNR step :math:`h` (none at first)."""

    x_hat: Tensor | None = None
    h: float = math.inf


class DPMSolver(Sampler):
    r"""DPM-Solver++(2M), deterministic, 1 NFE per step. From pure noise
    (:math:`\alpha_t = 0`, :math:`h = \infty`) the step is first order, as is the next."""

    pure_noise = True

    def new_state(self) -> History:
        return History()

    def step(self, run: Run, x_t: Tensor, step: Step, state: History) -> Tensor:
        alpha_t, sigma_t, alpha_s, sigma_s = step.coefficients
        x_hat = run.denoise(x_t, step.t)
        exp_minus_h = (sigma_s * alpha_t) / (alpha_s * sigma_t)
        d = x_hat
        h = math.inf
        if sigma_s > 0 and exp_minus_h > 0:
            h = -math.log(exp_minus_h)
            if state.x_hat is not None:
                r = state.h / h
                d = (1 + 1 / (2 * r)) * x_hat - 1 / (2 * r) * state.x_hat
        state.x_hat, state.h = x_hat, h
        return (sigma_s / sigma_t) * x_t + alpha_s * (1 - exp_minus_h) * d
