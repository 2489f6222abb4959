r"""PnP-Flow: plug-and-play restoration with a flow-matching prior (Martin et al., ICLR 2025).

Each iteration :math:`k` at a time :math:`t_k` of the grid (from pure noise down) takes a
gradient step on the data fidelity, re-noises the result to :math:`t_k` along the flow's
straight path and denoises it with the prior, averaging over ``draws`` noise draws:

.. math:: z_k = x_k - \gamma_k \nabla_x \tfrac12 \lVert y - A(x_k) \rVert^2, \qquad
    x_{k+1} = \frac1M \sum_{j=1}^M \hat x\big(\alpha_{t_k} z_k + \sigma_{t_k} \epsilon_j,\,
    t_k\big), \qquad \gamma_k = \gamma\, t_k^{a},

the paper's Algorithm 1 with its step :math:`\gamma_k = \gamma (1 - \tau_k)^a` written in our
time (:math:`t = 1 - \tau`, where the paper's :math:`\tau = 1` is data) and its denoiser
:math:`D(x, \tau) = x + (1 - \tau) v(x, \tau)`, which is the posterior mean :math:`\hat x`
of a rectified flow prior (:class:`~priors.FlowDenoiser`). The iterations run at the grid's
times :math:`t_0 = 1, \dots, t_{N - 1}` (the pairs' first times; the grid's last time, 0,
only ends the walk), so ``time_grid(N)`` is the authors' uniform :math:`\tau_k = k / N`. The
first iteration, at pure noise, ignores its start (:math:`\alpha_1 = 0`). The result is a
point estimate (the authors average ``draws`` = 5 denoisings per iteration), not a posterior
sample. ``draws`` network evaluations per iteration, no VJP through the network (the
gradient is the operator's).

**Departures from the authors' code** (``annegnx/PnP-Flow``, ``pnpflow/methods/pnp_flow.py``):
their Gaussian data term is :math:`\lVert Ax - y \rVert^2 / (2 \sigma_y^2)` with a learning
rate scaled by :math:`\sigma_y^2` (``lr = sigma_noise**2 * lr_pnp``); the two cancel, and we
drop both, so :math:`\gamma` is their ``lr_pnp`` and :math:`\sigma_y = 0` keeps a data step
(theirs vanishes). Their start, :math:`A^\top 1`, is multiplied by :math:`\alpha_1 = 0` at the
first iteration, so any start gives the same result (tested). Any differentiable operator is
accepted (the gradient by autograd); the authors write :math:`A^\top (Ax - y)` for linear
ones, which this is. A linear operator's largest step must keep the gradient step a
contraction, :math:`\gamma t_0^a \lVert A \rVert^2 < 2` (power iteration); a larger one is
refused with the bound, since the run would diverge (the authors' default 1 is safe for their
operators, of norm at most 1).

References:
    | PnP-Flow: Plug-and-Play Image Restoration with Flow Matching (Martin, Gagneux, Hurault &
    | Delon, ICLR 2025) https://arxiv.org/abs/2410.02423
"""

from __future__ import annotations

import torch

from torch import Tensor

import checks

from guided.guidance import check_differentiable, check_flow, check_measurement
from guided.langevin import squared_norm
from guided.sampler import Run, Sampler, SamplerState, Step
from operators import Operator
from priors import Schedule, randn

__all__ = ["PnPFlow"]


class PnPFlow(Sampler):
    r"""PnP-Flow on a flow-matching prior (see the module).

    Arguments:
        op: A differentiable operator.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The measurement's noise level (the divergence check reads it; the update
            does not).
        lr: :math:`\gamma > 0`, the step of the data term (the authors' ``lr_pnp``; their
            configs tune it per problem, 1 by default).
        alpha: :math:`a \ge 0`, the exponent of the step's decay :math:`t^a` (1: the authors'
            ``alpha_1_minus_t`` at its default).
        draws: :math:`M \ge 1`, the noise draws averaged per iteration (5: the authors').
    """

    pure_noise = True  # the start enters multiplied by alpha_t

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float,
        lr: float = 1.0,
        alpha: float = 1.0,
        draws: int = 5,
    ) -> None:
        self.y = check_measurement(op, y, sigma_y)
        check_differentiable(op, "PnP-Flow")
        self.op, self.sigma_y = op, float(sigma_y)
        self.lr = checks.number(lr, "lr", low=0, open_low=True)
        self.alpha = checks.number(alpha, "alpha", low=0)
        self.draws = checks.integer(draws, "draws", low=1)

    def grid(self, ts: Tensor, schedule: Schedule) -> Tensor:
        check_flow(
            schedule, "PnP-Flow", "re-noises along the straight path of flow matching",
            "guided.DiffPIR or guided.PnPDM",
        )  # fmt: skip
        return ts

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        gamma = self.lr * float(step.t) ** self.alpha
        if step.index == 0:  # the largest step of the run: a linear data step must contract
            curvature = gamma * squared_norm(self.op, x_t)
            if curvature >= 2:
                raise ValueError(
                    f"PnP-Flow: the data step lr * t^alpha * |A|^2 = {curvature:.3g} at t = "
                    f"{float(step.t):.3g} is not below 2, so the gradient step expands the "
                    f"residual and the run diverges: take lr below {2 * self.lr / curvature:.3g}"
                )
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            residual = self.y.to(x.dtype) - self.op(x)
            (grad,) = torch.autograd.grad(0.5 * residual.square().sum(), x)
        z = x_t - gamma * grad
        total = torch.zeros_like(x_t)
        for _ in range(self.draws):
            eps = randn(z.shape, run.generator, dtype=z.dtype, device=z.device)
            total = total + run.denoise(step.alpha_t * z + step.sigma_t * eps, step.t)
        return total / self.draws
