r"""DAPS: decoupled annealing posterior sampling.

Each step of the annealing grid :math:`t \to s` decouples the sample at :math:`s` from the
one at :math:`t` through a clean estimate. With :math:`\bar\sigma = \sigma / \alpha` the noise
level of :math:`x_t / \alpha_t`:

1. **Prior.** :math:`\hat x_0` is the probability-flow ODE solved from :math:`x_t` down to the
   level :math:`\bar\sigma_{\min}` in ``ode_steps`` Euler steps on a :math:`\rho = 7` grid of
   levels (deterministic DDIM, which is Euler's method on :math:`d\bar x / d\bar\sigma =
   (\bar x - \hat x) / \bar\sigma`): ``ode_steps`` network evaluations.
2. **Likelihood.** ``langevin_steps`` steps of Langevin dynamics in :math:`x_0` on

   .. math:: \log p(x_0 \mid x_t, y) \approx -\frac{\lVert x_0 - \hat x_0 \rVert^2}
       {2 \bar\sigma_t^2} - \frac{\lVert y - A(x_0) \rVert^2}{2 \tau^2},

   :math:`x_0 \leftarrow x_0 + \eta_k \nabla \log p + \sqrt{2 \eta_k}\, z`, starting from
   :math:`\hat x_0`. The operator's vector-Jacobian products only: no network evaluation, so
   any differentiable operator works. The step size decays linearly over the run,
   :math:`\eta_k = \eta\,(1 - (1 - r) k / K)` at the :math:`k`-th of :math:`K` annealing steps
   (``step_size`` :math:`\eta`, ``decay`` :math:`r`), so it follows the run's progress, not
   its step count. Langevin steps are stable only below 2 over the target's curvature,
   :math:`1 / \bar\sigma_t^2 + \lVert A \rVert^2 / \tau^2` for a linear operator
   (:mod:`guided.langevin`, shared with PnP-DM); a step above it (a grid that runs
   down to tiny noise levels, an operator of large norm) is refused with an error rather than
   left to blow up. For a nonlinear operator only the prior term's part is checked.
3. **Noise.** :math:`x_s = \alpha_s x_0 + \sigma_s z` (the clean sample at :math:`s = 0`).

**Pure noise.** Where :math:`\alpha_t = 0` (:math:`t = 1` on a
:class:`~priors.RectifiedSchedule`) the level :math:`\bar\sigma_t` is infinite: the
likelihood step's coupling term vanishes (its Langevin steps sample the likelihood alone,
from the prior's mean), and the inner ODE's :math:`\rho = 7` grid, which has no useful limit
there (all its levels but the last go to infinity with :math:`\bar\sigma_t`, leaving one
effective step), starts instead at :math:`\max(100, \bar\sigma_s)`: the authors' largest
annealing level, or the annealing step's end if higher. Its first Euler step goes from the
noise straight to that level (DDIM's coefficients are exact at :math:`\alpha = 0`), and the
clean estimate converges to the probability-flow ODE's solution as ``ode_steps`` grows
(tested). This start rule is ours: the authors anneal from :math:`\bar\sigma = 100` and never
meet pure noise.

Cost: ``ode_steps`` NFE per annealing step (DAPS-1K of the paper: 200 annealing steps of 5,
i.e. 1000 NFE, with 100 Langevin steps each). The annealing grid is the ``ts`` the run is
given; the authors anneal :math:`\bar\sigma` from 100 to 0.1 on a :math:`\rho = 7` grid, which
:func:`~guided.time_grid` gives as ``time_grid(N, "karras", schedule=..., sigma_min=0.1)``
(from the schedule's top level instead of 100).

**Departures from the authors' code** (``sampler.py`` and ``cores/mcmc.py`` of
``zhangbingliang2019/DAPS``, the ``pixel`` Langevin settings):

- **τ.** Their data term is :math:`-\nabla \lVert A(x) - y \rVert^2 / \tau_{\text{code}}^2`,
  the gradient of a Gaussian log-likelihood of standard deviation
  :math:`\tau_{\text{code}} / \sqrt 2`; our ``tau`` is that standard deviation, so their
  :math:`\tau_{\text{code}} = 0.01` is our default :math:`\tau = 0.01 / \sqrt 2`. Their
  ``lr`` :math:`5 \cdot 10^{-5}` and ``lr_min_ratio`` 0.01 are our ``step_size`` and
  ``decay``.
- **Progress.** Their step size decays with step / (annealing steps + 1); ours with step /
  annealing steps.
- **Noise levels.** They work in the variance-exploding parameterisation :math:`x + \bar\sigma
  \epsilon`; we run the same process on any schedule through :math:`\bar\sigma = \sigma /
  \alpha` and scale by :math:`\alpha`, so the prior network sees its own inputs.
- Their Langevin loop returns zeros for a sample that turns NaN; ours stops with the
  sampler's NaN guard, which names the step.

References:
    | Improving Diffusion Inverse Problem Solving with Decoupled Noise Annealing
    | (Zhang, Chu, Berner, Meng, Anandkumar & Song, CVPR 2025) https://arxiv.org/abs/2407.01521
"""

from __future__ import annotations

import itertools
import math

from torch import Tensor

import checks

from guided.ddim import ddim_update
from guided.guidance import check_differentiable, check_measurement
from guided.langevin import LangevinLikelihood
from guided.sampler import Run, Sampler, SamplerState, Step
from guided.time import level_times
from operators import Operator
from priors import randn

__all__ = ["DAPS"]

#: Where the inner ODE's level spacing starts from pure noise: the authors' largest annealing
#: level (see the module).
PURE_NOISE_LEVEL = 100.0


class DAPS(Sampler):
    r"""DAPS sampler (see the module).

    Arguments:
        op: A differentiable operator (its vector-Jacobian product drives the Langevin steps).
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The measurement's noise level (recorded for the divergence check; the
            Langevin target uses ``tau``).
        tau: :math:`\tau > 0`, the standard deviation of the Langevin target's likelihood
            (the authors' 0.01 in their convention; see the module).
        ode_steps: Euler steps (network evaluations) of the inner ODE per annealing step.
        langevin_steps: Langevin steps per annealing step.
        step_size: The Langevin step size :math:`\eta` at the start of the run.
        decay: The ratio :math:`r \in (0, 1]` of the last step size to the first.
        sigma_min: The noise level :math:`\bar\sigma_{\min}` where the inner ODE stops.
    """

    pure_noise = True  # an infinite level at alpha_t = 0 and its own start rule (the module)

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float,
        *,
        tau: float = 0.01 / math.sqrt(2),
        ode_steps: int = 5,
        langevin_steps: int = 100,
        step_size: float = 5e-5,
        decay: float = 0.01,
        sigma_min: float = 0.01,
    ) -> None:
        self.y = check_measurement(op, y, sigma_y)
        check_differentiable(op, "DAPS (its Langevin steps)")
        self.op, self.sigma_y = op, float(sigma_y)
        self.tau = checks.number(tau, "tau", low=0, open_low=True)
        self.ode_steps = checks.integer(ode_steps, "ode_steps", low=1)
        self.langevin_steps = checks.integer(langevin_steps, "langevin_steps", low=0)
        self.step_size = checks.number(step_size, "step_size", low=0, open_low=True)
        self.decay = checks.number(decay, "decay", low=0, high=1, open_low=True)
        self.sigma_min = checks.number(sigma_min, "sigma_min", low=0, open_low=True)
        self.likelihood = LangevinLikelihood(op, self.y, self.tau)

    def clean_estimate(self, run: Run, x_t: Tensor, step: Step) -> Tensor:
        r""":math:`\hat x_0`: the probability-flow ODE from :math:`x_t` to
        :math:`\bar\sigma_{\min}` in ``ode_steps`` Euler (DDIM) steps, levels spaced as
        :math:`\bar\sigma^{1/7}` (one evaluation if :math:`x_t` is already below it); from
        pure noise the spacing starts at :math:`\max(100, \bar\sigma_s)` (see the module)."""
        schedule = run.schedule
        top = _level(step.alpha_t, step.sigma_t)
        if math.isinf(top):  # pure noise: the spacing starts at a finite level (the module)
            top = max(PURE_NOISE_LEVEL, _level(step.alpha_s, step.sigma_s))
        if top <= self.sigma_min:
            return run.denoise(x_t, step.t)
        times = level_times(schedule, top, self.sigma_min, self.ode_steps)
        times[0] = step.t
        x = x_t
        for t, s in itertools.pairwise(times):
            (alpha_t, sigma_t), (alpha_s, sigma_s) = schedule(t), schedule(s)
            x_hat = run.denoise(x, t)
            x = ddim_update(
                x, x_hat, float(alpha_t), float(sigma_t), float(alpha_s), float(sigma_s), 0.0
            )
        alpha_end, _ = schedule(times[-1])
        return x / float(alpha_end)

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        x0_hat = self.clean_estimate(run, x_t, step)
        level = _level(step.alpha_t, step.sigma_t)
        step_size = self.step_size * (1 - (1 - self.decay) * step.index / step.count)
        if self.langevin_steps:
            self.likelihood.check(
                step_size, level, x_t, f"DAPS at t = {float(step.t):.4g}",
                "lower step_size, raise tau, or end the annealing grid at a higher noise level "
                "(time_grid(N, 'karras', schedule=..., sigma_min=0.1), as the authors)",
            )  # fmt: skip
        x0 = self.likelihood.sample(x0_hat, level, step_size, self.langevin_steps, run.generator)
        if step.sigma_s == 0:
            return x0
        z = randn(x0.shape, run.generator, dtype=x0.dtype, device=x0.device)
        return step.alpha_s * x0 + step.sigma_s * z


def _level(alpha: float, sigma: float) -> float:
    r""":math:`\bar\sigma = \sigma / \alpha`, infinite at pure noise (:math:`\alpha = 0`)."""
    return sigma / alpha if alpha > 0 else math.inf
