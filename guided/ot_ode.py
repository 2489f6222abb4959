r"""OT-ODE: training-free linear inverse problems with a flow prior, the flow ODE guided by
:math:`\Pi`\ GDM (Pokle et al., TMLR 2024).

The flow's Euler sampler is started away from pure noise, at a time :math:`t_0` (``start``),
from the noised back-projection of the measurement, :math:`x_{t_0} = \alpha_{t_0} A^\top y +
\sigma_{t_0} \epsilon`, and each step follows the velocity of the :math:`\Pi`\ GDM-corrected
estimate (:class:`~guided.PiGDM`, with the posterior variance :math:`r_t^2 = \sigma_t^2 /
(\alpha_t^2 + \sigma_t^2)` of unit-variance data):

.. math:: \hat x_y = \hat x + \gamma_t \frac{\sigma_t^2}{\alpha_t} J^\top A^\top (r_t^2 A
    A^\top + \sigma_y^2 I)^{-1} (y - A \hat x), \qquad x_s = x_t + (s - t)\, \frac{x_t -
    \hat x_y}{t},

the Euler step on the rectified schedule (DDIM with :math:`\eta = 0`). In the flow time
:math:`\tau = 1 - t` of the paper, the velocity's correction :math:`\gamma_\tau (1 - \tau) /
\tau \cdot g` is that of :math:`\hat x_y` here. :math:`\gamma_t = 1` (``adaptive=False``, the
PnP-Flow authors' configuration) or :math:`\gamma_t = \sqrt{\alpha_t / (\alpha_t^2 +
\sigma_t^2)}` (``adaptive=True``). One network evaluation and one VJP per step.

The grid given to the sampler is cut to its times at or below :math:`t_0` (with :math:`t_0`
itself first), so ``time_grid(N)`` with :math:`N t_0` whole runs the steps
:math:`\tau_k = k / N`, :math:`k = N (1 - t_0), \dots, N - 1`; the run's ``x_T`` is taken as the
noise :math:`\epsilon` of the start (a draw of :func:`~guided.initial_noise` at :math:`t = 1`).

Read against the PnP-Flow authors' re-implementation (``annegnx/PnP-Flow``,
``pnpflow/methods/ot_ode.py``, their baseline for this method, with ``start_time`` 0.2 in
their :math:`\tau`, our ``start`` 0.8, and the back-projection :math:`A^\top y` as the start's
signal): it is their loop step for step given the same noise (tested on inpainting, where
their closed-form solve is ours).

References:
    | Training-free Linear Image Inverses via Flows (Pokle, Muckley, Chen & Karrer, TMLR 2024)
    | https://arxiv.org/abs/2310.04432
"""

from __future__ import annotations

import math

import torch

from torch import Tensor

import checks

from guided.ddim import ddim_update
from guided.guidance import GuidedDenoiser, check_flow
from guided.pigdm import PiGDM
from guided.sampler import Run, Sampler, SamplerState, Step
from operators import LinearOperator
from priors import Schedule

__all__ = ["OTODE"]


class OTODE(Sampler):
    r"""OT-ODE on a flow-matching prior (see the module).

    Arguments:
        op: A linear operator.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level (0 allowed).
        start: :math:`t_0 \in (0, 1)`, the start time (0.8: the paper's :math:`\tau_0 = 0.2`).
        adaptive: Whether to weight the correction by :math:`\gamma_t = \sqrt{\alpha_t /
            (\alpha_t^2 + \sigma_t^2)}` (False: :math:`\gamma = 1`).
        iterations: Conjugate-gradient iterations of :class:`~guided.PiGDM` for operators
            without an SVD.
    """

    def __init__(
        self,
        op: LinearOperator,
        y: Tensor,
        sigma_y: float,
        start: float = 0.8,
        adaptive: bool = False,
        iterations: int = 50,
    ) -> None:
        self.term = PiGDM(op, y, sigma_y, iterations=iterations)
        self.op, self.y, self.sigma_y = op, self.term.y, float(sigma_y)
        self.start = checks.number(start, "start", low=0, high=1, open_low=True, open_high=True)
        self.adaptive = checks.flag(adaptive, "adaptive")

    def grid(self, ts: Tensor, schedule: Schedule) -> Tensor:
        check_flow(
            schedule, "OT-ODE", "follows the flow's straight path", "guided.PiGDM with guided.DDIM"
        )
        below = ts[ts < self.start - 1e-12]
        if below.numel() == 0:
            raise ValueError(f"the grid has no time below start = {self.start}")
        return torch.cat([ts.new_tensor([self.start]), below])

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        alpha_t, sigma_t = step.alpha_t, step.sigma_t
        if step.index == 0:  # x_T is the start's noise: noise the back-projection to t_0
            back = self.op.adjoint(self.y.to(x_t.dtype))
            x_t = alpha_t * back + sigma_t * x_t
        # gamma_t is PiGDM's weight at this step (the correction is linear in it)
        self.term.weight = math.sqrt(alpha_t / (alpha_t**2 + sigma_t**2)) if self.adaptive else 1.0
        guided = GuidedDenoiser(run.denoiser, self.term)(x_t, step.t, **run.cond)
        return ddim_update(x_t, guided, *step.coefficients, 0.0)
