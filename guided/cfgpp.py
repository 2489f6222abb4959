r"""CFG++: classifier-free guidance that renoises with the unconditional noise.

With the two passes :math:`\hat x_c` and :math:`\hat x_\varnothing` at :math:`(x_t, t)` and
:math:`\hat\epsilon_\varnothing = (x_t - \alpha_t \hat x_\varnothing) / \sigma_t`, a DDIM step
of CFG++ from :math:`t` to :math:`s` is

.. math:: \hat x_\lambda = \hat x_\varnothing + \lambda (\hat x_c - \hat x_\varnothing), \qquad
    x_s = \alpha_s \hat x_\lambda + \sigma_s \hat\epsilon_\varnothing,

with :math:`\lambda \in [0, 1]` (``scale``): the clean estimate is interpolated, never
extrapolated, and the noise direction stays the unconditional one, which keeps the sample on
the unconditional model's noise manifold (the paper's argument against CFG's off-manifold
extrapolation). Two network evaluations per step.

**Why a sampler and not a denoiser wrapper.** A wrapper returns one prediction, from which a
sampler derives both its clean estimate and its noise; CFG++ takes them from different
predictions. Written as one prediction, a CFG++ step is a DDIM step with classifier-free
guidance at the step-dependent scale

.. math:: w_{t \to s} = \lambda \Big/ \Big(1 - \frac{\sigma_s \alpha_t}{\alpha_s \sigma_t}\Big),

which depends on :math:`s`, which a denoiser does not see (tested: the two steps agree).
diffusers' guider likewise hands the unconditional output to its scheduler.

Departures from the paper's DDIM form: none in the step; ``scale`` is
the paper's :math:`\lambda`, and rows with any condition run in one batched call.

References:
    | CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models
    | (Chung, Kim, Park, Nam & Ye, ICLR 2025) https://arxiv.org/abs/2406.08070
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

import checks

from guided.cfg import _null, both_passes, requested
from guided.sampler import Run, Sampler, SamplerState, Step
from priors.tweedie import eps_from_x0

__all__ = ["CFGPlusPlus"]


class CFGPlusPlus(Sampler):
    r"""CFG++ with DDIM steps (see the module); run it on a conditional prior with its
    condition, e.g. ``CFGPlusPlus(0.6)(prior, x_T, ts, label=labels)``.

    Arguments:
        scale: :math:`\lambda \in [0, 1]` (0: the unconditional DDIM sampler).
        key: The condition keyword (``label`` for our priors).
        null: The dropped value of ``key`` (default: label :math:`-1`).
    """

    pure_noise = True  # the unconditional noise estimate x_t / sigma_t at alpha_t = 0

    def __init__(
        self, scale: float, key: str = "label", null: Mapping[str, Any] | None = None
    ) -> None:
        self.scale = checks.number(scale, "scale", low=0, high=1)
        self.key = key
        self.null = _null(null, [key])[key]

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        alpha_t, sigma_t, alpha_s, sigma_s = step.coefficients
        c, cond = requested(run.cond, self.key, x_t.shape[0], x_t.device)
        conditional, unconditional = both_passes(
            run.denoiser, x_t, step.t, self.key, c, self.null, cond
        )
        clean = unconditional + self.scale * (conditional - unconditional)
        eps = eps_from_x0(x_t, unconditional, alpha_t, sigma_t)
        return alpha_s * clean + sigma_s * eps
