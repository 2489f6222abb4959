r"""A flow-matching velocity field as a :class:`~priors.Denoiser`.

A flow-matching network (Lipman et al., 2023; Liu et al., 2023) predicts the velocity
:math:`\hat u(x_t, t) = E[\dot\alpha_t x + \dot\sigma_t \epsilon \mid x_t]` of
:math:`x_t = \alpha_t x + \sigma_t \epsilon`; on the :class:`~priors.RectifiedSchedule` of
Stable Diffusion 3 and Flux that is :math:`E[\epsilon - x \mid x_t]`. Since the velocity is an
affine function of the posterior mean (:func:`priors.tweedie.x0_from_flow`), the field is a
denoiser like any other, and every sampler, guidance rule and guider runs on it unchanged:

.. math:: \hat x = \frac{\sigma_t \hat u - \dot\sigma_t x_t}{\dot\alpha_t \sigma_t -
    \dot\sigma_t \alpha_t} \quad (= x_t - t \hat u \text{ on the rectified schedule}).

The probability-flow ODE :math:`\dot x_t = \hat u(x_t, t)` is the flow model's sampling ODE;
DDIM with :math:`\eta = 0` is exactly its Euler method on the rectified schedule, and
:class:`guided.FlowHeun` is Heun's method on it.

References:
    | Flow Matching for Generative Modeling (Lipman et al., 2023)
    | https://arxiv.org/abs/2210.02747
    | Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow
    | (Liu et al., 2023) https://arxiv.org/abs/2209.03003
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from priors.denoiser import Denoiser
from priors.schedules import Schedule
from priors.tweedie import x0_from_flow

__all__ = ["FlowDenoiser"]


class FlowDenoiser(Denoiser):
    r"""A velocity field :math:`\hat u(x_t, t, **cond)` as a denoiser (see the module).

    Each call evaluates the field once (one network evaluation).

    Arguments:
        velocity: The field, called as ``velocity(x_t, t, **cond)`` with ``t`` a float64
            time of shape :math:`()` or :math:`(B,)`; returns a tensor shaped like ``x_t``. A
            ``torch.nn.Module`` is registered as a submodule.
        schedule: The schedule the field was trained on, with :math:`\dot\alpha_t,
            \dot\sigma_t` (:meth:`~priors.Schedule.derivatives`); usually a
            :class:`~priors.RectifiedSchedule`.
        shape: One sample's shape (optional; what samplers and apps read as ``shape``).
    """

    def __init__(
        self,
        velocity: Callable[..., Tensor],
        schedule: Schedule,
        shape: Sequence[int] | None = None,
    ) -> None:
        if not callable(velocity):
            raise TypeError(f"velocity must be callable, got {type(velocity).__name__}")
        super().__init__(schedule)
        self.velocity = velocity
        if shape is not None:
            self.shape = tuple(int(n) for n in shape)

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        u = self.velocity(x_t, t, **cond)
        if not isinstance(u, Tensor) or u.shape != x_t.shape:
            found = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(
                f"the velocity field must return a tensor of x_t's shape {tuple(x_t.shape)}, "
                f"got {found}"
            )
        alpha_t, sigma_t = self.schedule(t)
        d_alpha, d_sigma = self.schedule.derivatives(t)
        return x0_from_flow(x_t, u, alpha_t, sigma_t, d_alpha, d_sigma)
