r"""RED-diff: variational posterior sampling as regularisation by denoising.

RED-diff fits the mean :math:`\mu` of a Dirac variational posterior :math:`q = \delta_\mu` by
stochastic optimisation along the diffusion's noise levels, from high to low. At the step
from :math:`t`, with fresh :math:`\epsilon`, :math:`x_t = \alpha_t \mu + \sigma_t \epsilon` and
the network's noise estimate :math:`\hat\epsilon(x_t)` (held constant: no gradient through
the network), the loss per sample is

.. math:: \ell(\mu) = \frac{\lambda_t}{D} \langle \operatorname{sg}[\hat\epsilon(x_t) -
    \epsilon], \mu \rangle + \frac{v}{2 M} \lVert y - A(\mu) \rVert^2, \qquad
    \lambda_t = \lambda \frac{\sigma_t}{\alpha_t},

(:math:`D` pixels, :math:`M` measurements; the first term's gradient is the score-matching
regulariser, the second the data fit), and :math:`\mu` takes one Adam step on it. Since
:math:`\hat\epsilon - \epsilon = \alpha_t (x_0 - \hat x(x_t)) / \sigma_t` for
:math:`x_t = \alpha_t x_0 + \sigma_t \epsilon`, the regulariser's gradient is
:math:`\lambda (x_0 - \hat x(x_t)) / D`; it is computed in that form, which does not divide
by :math:`\alpha_t`, so a run may start at pure noise (:math:`t = 1` on a
:class:`~priors.RectifiedSchedule`, where :math:`\hat x` is the prior's mean). The output
is :math:`\mu` after the last step. One network evaluation per step, no vector-Jacobian
product through the network; the operator's vector-Jacobian product gives the data term's
gradient, so any differentiable operator works.

Defaults are the authors' configuration (``_configs/algo/reddiff.yaml`` of
``NVlabs/RED-diff``): :math:`\lambda` = ``grad_term_weight`` 0.25 with the ``linear``
weighting :math:`\sigma_t / \alpha_t`, :math:`v` = ``obs_weight`` 1, Adam with ``lr`` 0.1 and
betas (0.9, 0.99), :math:`\mu` started at the pseudo-inverse :math:`A^+ y`, no noise on
:math:`\mu` (``sigma_x0`` 0). Their README's example uses ``lr`` 0.5.

**Where we depart from the authors' code** (``algos/reddiff.py``):

- Their losses are means over the whole batch, so a sample's gradient carries a factor
  :math:`1 / B`; ours are per sample (means over its pixels and measurements), so a row never
  depends on the batch. Adam's update is invariant to that factor except through its
  :math:`\epsilon = 10^{-8}`.
- Adam is written out per element (the same update as ``torch.optim.Adam`` with these betas
  and :math:`\epsilon`, bias-corrected), held in the sampler's state rather than in an
  optimiser object.
- A nonlinear operator has no pseudo-inverse here: :math:`\mu` starts at 0 (their code calls
  the degradation's ``H_pinv`` for every task).
- Only the ``linear`` weighting; their other choices (``sqrt``, ``log``, ...) and
  ``cond_awd`` are not built.

References:
    | A Variational Perspective on Solving Inverse Problems with Diffusion Models
    | (Mardani, Song, Kautz & Vahdat, ICLR 2024) https://arxiv.org/abs/2305.04391
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch

from torch import Tensor

import checks

from guided.guidance import check_differentiable, check_measurement
from guided.sampler import Run, Sampler, SamplerState, Step
from operators import LinearOperator, Operator
from priors import randn

__all__ = ["REDDiff"]


@dataclass
class AdamState(SamplerState):
    """Adam's moments of :math:`\\mu` and its step count."""

    first: Tensor | None = None
    second: Tensor | None = None
    steps: int = 0


class REDDiff(Sampler):
    r"""RED-diff sampler (see the module). It steps from pure noise (:math:`\alpha_t = 0`).

    Arguments:
        op: A differentiable operator.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The measurement's noise level (recorded for the divergence check; the loss
            weighs the data term by ``obs_weight``).
        weight: :math:`\lambda`, the regulariser's weight (the authors' ``grad_term_weight``).
        obs_weight: :math:`v`, the data term's weight.
        lr: Adam's learning rate.
        betas: Adam's :math:`(\beta_1, \beta_2)`.
        sigma_x0: Noise added to :math:`\mu` before it is noised to :math:`x_t` (0: none).
    """

    pure_noise = True  # the regulariser is written without dividing by alpha_t

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float,
        *,
        weight: float = 0.25,
        obs_weight: float = 1.0,
        lr: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.99),
        sigma_x0: float = 0.0,
    ) -> None:
        self.y = check_measurement(op, y, sigma_y)
        check_differentiable(op, "RED-diff (its data term)")
        self.op, self.sigma_y = op, float(sigma_y)
        self.weight = checks.number(weight, "weight", low=0)
        self.obs_weight = checks.number(obs_weight, "obs_weight", low=0)
        self.lr = checks.number(lr, "lr", low=0, open_low=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = tuple(checks.number(b, "betas", low=0, high=1, open_high=True) for b in betas)
        self.sigma_x0 = checks.number(sigma_x0, "sigma_x0", low=0)

    def new_state(self) -> AdamState:
        return AdamState()

    def start(self, like: Tensor) -> Tensor:
        r""":math:`\mu_0 = A^+ y` (0 for a nonlinear operator), one row per row of ``like``."""
        y = self.y.to(like.dtype).expand(like.shape[0], *self.op.out_shape)
        if isinstance(self.op, LinearOperator):
            return self.op.pinv(y)
        return torch.zeros_like(like)

    def gradient(self, run: Run, mu: Tensor, step: Step) -> Tensor:
        r""":math:`\nabla_\mu \ell` at one fresh draw of :math:`\epsilon` (see the module)."""
        alpha_t, sigma_t = step.alpha_t, step.sigma_t

        def draw() -> Tensor:
            return randn(mu.shape, run.generator, dtype=mu.dtype, device=mu.device)

        x0 = mu + self.sigma_x0 * draw() if self.sigma_x0 > 0 else mu
        eps = draw()
        x_t = alpha_t * x0 + sigma_t * eps
        pixels = math.prod(mu.shape[1:])
        measurements = math.prod(self.op.out_shape)
        y = self.y.to(mu.dtype)
        # (sigma_t / alpha_t) (eps_hat - eps), written without dividing by alpha_t
        regulariser = (self.weight / pixels) * (x0 - run.denoise(x_t, step.t))
        data = (-self.obs_weight / measurements) * self.op.vjp(x0, y - self.op(x0))
        return regulariser + data

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        assert isinstance(state, AdamState)
        if state.first is None or state.second is None:  # the run's first step
            mu = self.start(x_t)
            state.first, state.second = torch.zeros_like(mu), torch.zeros_like(mu)
        else:
            mu = x_t
        g = self.gradient(run, mu, step)
        b1, b2 = self.betas
        state.steps += 1
        state.first = b1 * state.first + (1 - b1) * g
        state.second = b2 * state.second + (1 - b2) * g * g
        first = state.first / (1 - b1**state.steps)
        second = state.second / (1 - b2**state.steps)
        return mu - self.lr * first / (second.sqrt() + 1e-8)
