r"""CFG-Zero*: classifier-free guidance for flow-matching priors with an optimised scale and
zero initialisation (Fan et al., 2025).

With the two passes of :class:`~guided.ClassifierFree` turned into velocities
(:func:`priors.tweedie.flow_from_x0`), :math:`\hat u_c` and :math:`\hat u_\varnothing`, the
unconditional velocity is first scaled by the per-row least-squares factor

.. math:: s^* = \frac{\langle \hat u_c, \hat u_\varnothing \rangle}
    {\lVert \hat u_\varnothing \rVert^2}, \qquad
    \hat u = s^* \hat u_\varnothing + w (\hat u_c - s^* \hat u_\varnothing)

(the paper's eq. 9 and Algorithm 1, over all of a row's coordinates), and the guided velocity
turns back into the denoiser's :math:`\hat x` (:func:`priors.tweedie.x0_from_flow`), so any
sampler runs it. **Zero-init**: at the first steps of a run, where the paper finds the
learned velocity least accurate, the velocity is zero (an Euler or DDIM step then leaves
:math:`x_t` where it is): at times :math:`t \ge` ``zero_above``, so ``zero_above = ts[K -
1]`` zeroes the first :math:`K` steps of a grid ``ts``. The default, 1, zeroes the step from
pure noise, which is the one step of diffusers' default (``zero_init_steps=1``); the paper
suggests about 4% of the steps. ``zero_above=None`` turns it off.

With :math:`s^* = 1` this is classifier-free guidance, and at :math:`w = 1` the conditional
velocity whatever :math:`s^*`. Two network evaluations per row, zero-init steps included (their
passes still run). The guider needs a flow-matching prior: it refuses schedules other than
:class:`~priors.RectifiedSchedule`.

**Against diffusers' ``ClassifierFreeZeroStarGuidance``** (``src/diffusers/guiders/
classifier_free_zero_star_guidance.py``): the same formula on the same velocities (tested
against it), with diffusers' :math:`10^{-8}` added to :math:`\lVert \hat u_\varnothing
\rVert^2`; the zero-init is given by time instead of diffusers' step counter, so it does not
depend on a sampler calling the guider once per step.

References:
    | CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models
    | (Fan, Zheng, Yeh & Liu, 2025) https://arxiv.org/abs/2503.18886
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from torch import Tensor

import checks

from guided.cfg import ClassifierFree
from guided.guidance import check_flow
from priors import Denoiser
from priors.tweedie import append_dims, flow_from_x0, x0_from_flow

__all__ = ["CFGZeroStar", "optimised_scale"]


def optimised_scale(conditional: Tensor, unconditional: Tensor) -> Tensor:
    r"""The per-row :math:`s^* = \langle u_c, u_\varnothing \rangle / (\lVert u_\varnothing
    \rVert^2 + 10^{-8})` (the authors' and diffusers' small constant), shaped to multiply rows,
    computed in float64."""
    dims = tuple(range(1, conditional.ndim))
    c, u = conditional.to(torch.float64), unconditional.to(torch.float64)
    scale = (c * u).sum(dim=dims, keepdim=True) / (u.square().sum(dim=dims, keepdim=True) + 1e-8)
    return scale.to(conditional.dtype)


class CFGZeroStar(ClassifierFree):
    r"""CFG-Zero* on a flow-matching prior (see the module).

    Arguments:
        prior: A conditional denoiser on a :class:`~priors.RectifiedSchedule` (e.g. a
            :class:`~priors.FlowDenoiser`).
        scale: The guidance scale :math:`w` (1: conditional).
        zero_above: The velocity is zero at times :math:`t \ge` ``zero_above`` (1: the step
            from pure noise; None: no zero-init).
        rescale: The CFG-rescale mix of :class:`~guided.ClassifierFree`.
        interval: :class:`~guided.ClassifierFree`'s guidance interval.
        key: The condition keyword (``label`` for our priors).
        null: The dropped value of ``key`` (default: label :math:`-1`).
    """

    def __init__(
        self,
        prior: Denoiser,
        scale: float,
        zero_above: float | None = 1.0,
        rescale: float = 0.0,
        interval: tuple[float, float] | None = None,
        key: str = "label",
        null: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(prior, scale, rescale=rescale, interval=interval, key=key, null=null)
        check_flow(
            self.schedule, "CFG-Zero*", "guides flow-matching velocities",
            "guided.ClassifierFree or guided.APG",
        )  # fmt: skip
        self.zero_above = (
            None if zero_above is None else checks.number(zero_above, "zero_above", low=0, high=1)
        )

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        guided = super().forward(x_t, t, **cond)
        if self.zero_above is None:
            return guided
        zero = append_dims((t >= self.zero_above).to(x_t.device), x_t.ndim)
        if not bool(zero.any()):
            return guided
        still = x0_from_flow(x_t, torch.zeros_like(x_t), *self._coefficients(t, x_t))
        return torch.where(zero, still, guided)

    def combine(
        self, x_t: Tensor, t: Tensor, conditional: Tensor, unconditional: Tensor
    ) -> Tensor:
        coefficients = self._coefficients(t, x_t)
        u_c = flow_from_x0(x_t, conditional, *coefficients)
        u_u = flow_from_x0(x_t, unconditional, *coefficients)
        u_u = optimised_scale(u_c, u_u) * u_u
        return x0_from_flow(x_t, u_u + self.scale * (u_c - u_u), *coefficients)

    def _coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, ...]:
        """:math:`(\\alpha_t, \\sigma_t, \\dot\\alpha_t, \\dot\\sigma_t)` in ``like``'s dtype."""
        return tuple(c.to(like.dtype) for c in (*self.schedule(t), *self.schedule.derivatives(t)))
