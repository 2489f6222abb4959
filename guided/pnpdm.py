r"""PnP-DM: split Gibbs sampling with the diffusion prior as the denoising step.

PnP-DM samples the augmented density

.. math:: \pi_\rho(x, z) \propto p(x) \exp\left(-\frac{\lVert x - z \rVert^2}{2 \rho^2}
    \right) \exp\left(-\frac{\lVert y - A(z) \rVert^2}{2 \sigma_y^2}\right)

by alternating its two conditionals while the coupling level :math:`\rho` is annealed:

1. **Likelihood step**, :math:`z \sim \pi_\rho(z \mid x) \propto \exp(-\lVert y - A z
   \rVert^2 / 2 \sigma_y^2 - \lVert z - x \rVert^2 / 2 \rho^2)`. For a
   :class:`~operators.LinearOperator` this is a Gaussian with precision :math:`A^\top A /
   \sigma_y^2 + I / \rho^2`, drawn exactly by perturbing both terms and solving
   (:math:`z = \arg\min \lVert y + \sigma_y \xi - A z \rVert^2 + (\sigma_y / \rho)^2 \lVert z
   - x - \rho \zeta \rVert^2`, :meth:`~operators.LinearOperator.ridge`: exact on an
   :class:`~operators.SVDOperator`, ``iterations`` conjugate-gradient steps otherwise; at
   :math:`\sigma_y = 0` the exact draw on the measured set). Any other differentiable
   operator takes ``langevin_steps`` Langevin steps of size ``step_size`` from :math:`x`
   (:mod:`guided.langevin`; no network evaluation).
2. **Prior step**, :math:`x \sim \pi_\rho(x \mid z) \propto p(x) \exp(-\lVert x - z \rVert^2 /
   2 \rho^2)`: the posterior of a denoising problem at noise level :math:`\rho`, which is the
   diffusion's reverse process started at the time :math:`\tau` where :math:`\sigma_\tau /
   \alpha_\tau = \rho`, from :math:`x_\tau = \alpha_\tau z`: ``prior_steps`` ancestral
   (DDPM) steps whose noise levels are spaced as :math:`\bar\sigma^{1/7}` from :math:`\rho`
   down to ``sigma_min`` (or :math:`\rho / 10` when :math:`\rho` is below it), then a last
   step to :math:`t = 0`. ``prior_steps`` network evaluations.

For a fixed :math:`\rho` the chain's :math:`x` has the stationary law :math:`p(x)
\mathcal{N}(y; A x, \sigma_y^2 I + \rho^2 A A^\top)` (linear :math:`A`), the posterior with a
likelihood widened by :math:`\rho`; it becomes the posterior as :math:`\rho \to 0`.

**Annealing.** PnP-DM's iterations are not diffusion times: a run's grid ``ts`` gives their
number :math:`K` (``len(ts) - 1``) and nothing else. Iteration :math:`k` couples at

.. math:: \rho_k = \max\left(\rho_{\min}, \rho_{\max} (\rho_{\min} / \rho_{\max})^{k / (a K)}
    \right),

a geometric descent over the first share :math:`a` (``anneal``) of the run and a plateau at
:math:`\rho_{\min}` after it. The paper's schedule :math:`\rho_k = \max(\rho_{\min}, \rho_0
d^k)` with :math:`\rho_0 = 10`, :math:`d = 0.9`, :math:`\rho_{\min} = 0.3` over 100 iterations
is this one with :math:`a = 0.333` (it reaches 0.3 at :math:`k = 33.3`); written as a share,
the same settings carry to any iteration count. The sample carried between iterations is
the clean :math:`x`; the run starts from :math:`x_T` itself (the first likelihood step, at
:math:`\rho_{\max}`, mostly forgets it), and its output is the last prior step's :math:`x`.
Cost: ``prior_steps`` NFE per iteration and no vector-Jacobian product through the network.

**Departures from the authors' code** (``pnpdm/samplers/pnp_edm`` of
``zihuiwu/PnP-DM-public``):

- Their prior step is an Euler-Maruyama discretisation of the reverse SDE on a fixed EDM grid
  of 100 levels from 80 to 0.002, entered at the first level below :math:`\rho` (with
  :math:`z` treated as if at that level): its cost varies from about 29 evaluations at
  :math:`\rho = 0.3` to 67 at 10. Ours starts exactly at :math:`\rho` on any schedule and
  takes a fixed ``prior_steps`` ancestral steps (DDPM's exact Gaussian transitions given the
  denoiser's mean), so an iteration's cost is known in advance.
- Their annealing decays by a fixed factor per iteration; ours by the share of the run (see
  above), so the same settings carry across iteration counts.
- Their linear likelihood step draws in an operator's SVD; ours in the same closed form on an
  :class:`~operators.SVDOperator` and by perturb-and-solve with conjugate gradients on any
  other linear operator. Their nonlinear tasks use the authors' own Langevin or MCMC
  settings per task; ours is the one Langevin loop DAPS uses.
- They start from :math:`A^+ y` (SVD tasks) or zeros; we start from :math:`x_T`.

References:
    | Principled Probabilistic Imaging using Diffusion Models as Plug-and-Play Priors
    | (Wu, Sun, Chen, Zhang, Yue & Bouman, NeurIPS 2024) https://arxiv.org/abs/2405.18782
"""

from __future__ import annotations

import itertools
import math

import torch

from torch import Tensor

import checks

from guided.ddim import ddim_update
from guided.guidance import check_differentiable, check_measurement
from guided.langevin import LangevinLikelihood
from guided.sampler import Run, Sampler, SamplerState, Step
from guided.time import level_times
from operators import LinearOperator, Operator
from priors import randn

__all__ = ["PnPDM"]


class PnPDM(Sampler):
    r"""PnP-DM sampler (see the module).

    Arguments:
        op: The operator: linear (exact likelihood step) or differentiable (Langevin).
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The measurement's noise level :math:`\sigma_y` (the likelihood's; > 0 for a
            nonlinear operator).
        rho_max: :math:`\rho_{\max}`, the first coupling level (the paper's
            :math:`\rho_0 = 10`).
        rho_min: :math:`\rho_{\min}`, the smallest (the authors' 0.3 for linear tasks on
            images in [-1, 1]).
        anneal: :math:`a \in (0, 1]`, the share of the run spent descending from
            :math:`\rho_{\max}` to :math:`\rho_{\min}`.
        prior_steps: Ancestral steps (network evaluations) per prior step.
        sigma_min: The noise level where the prior step's spacing ends before its last step
            to :math:`t = 0`.
        iterations: Conjugate-gradient iterations of the linear likelihood step on an
            operator without an SVD.
        langevin_steps: Langevin steps of the likelihood step for a nonlinear operator.
        step_size: Their step size.
    """

    pure_noise = True  # the grid gives the iteration count only: its times are never read

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float,
        *,
        rho_max: float = 10.0,
        rho_min: float = 0.3,
        anneal: float = 1 / 3,
        prior_steps: int = 10,
        sigma_min: float = 0.01,
        iterations: int = 50,
        langevin_steps: int = 100,
        step_size: float = 1e-4,
    ) -> None:
        self.y = check_measurement(op, y, sigma_y)
        self.op, self.sigma_y = op, float(sigma_y)
        self.linear = isinstance(op, LinearOperator)
        if not self.linear:
            check_differentiable(op, "PnP-DM (its Langevin likelihood step)")
            if self.sigma_y == 0:
                raise ValueError(
                    "sigma_y must be > 0 for PnP-DM with a nonlinear operator: its Langevin "
                    "likelihood step has no noiseless form"
                )
        self.rho_min = checks.number(rho_min, "rho_min", low=0, open_low=True)
        self.rho_max = checks.number(rho_max, "rho_max", low=self.rho_min)
        self.anneal = checks.number(anneal, "anneal", low=0, high=1, open_low=True)
        self.prior_steps = checks.integer(prior_steps, "prior_steps", low=1)
        self.sigma_min = checks.number(sigma_min, "sigma_min", low=0, open_low=True)
        self.iterations = checks.integer(iterations, "iterations", low=1)
        self.langevin_steps = checks.integer(langevin_steps, "langevin_steps", low=1)
        self.step_size = checks.number(step_size, "step_size", low=0, open_low=True)
        self.likelihood = None if self.linear else LangevinLikelihood(op, self.y, self.sigma_y)

    def coupling(self, step: Step) -> float:
        r""":math:`\rho_k` of the ``step.index``-th of ``step.count`` iterations (see the
        module)."""
        progress = step.index / (self.anneal * step.count)
        return max(self.rho_min, self.rho_max * (self.rho_min / self.rho_max) ** progress)

    def likelihood_step(self, run: Run, x: Tensor, rho: float, where: str) -> Tensor:
        r"""A draw of :math:`z \sim \pi_\rho(z \mid x)` (see the module)."""

        def draw(shape: tuple[int, ...]) -> Tensor:
            return randn(shape, run.generator, dtype=x.dtype, device=x.device)

        if self.linear:
            assert isinstance(self.op, LinearOperator)
            y = self.y.to(x.dtype).expand(x.shape[0], *self.op.out_shape)
            centre = x + rho * draw(tuple(x.shape))
            if self.sigma_y > 0:
                y = y + self.sigma_y * draw(tuple(y.shape))
            ridge = (self.sigma_y / rho) ** 2
            return self.op.ridge(y, centre, ridge, iterations=self.iterations)
        assert self.likelihood is not None
        self.likelihood.check(self.step_size, rho, x, where, "lower step_size or raise rho_min")
        return self.likelihood.sample(x, rho, self.step_size, self.langevin_steps, run.generator)

    def prior_step(self, run: Run, z: Tensor, rho: float) -> Tensor:
        r"""A draw of :math:`x \sim \pi_\rho(x \mid z)`: the reverse process from the level
        :math:`\rho` (see the module)."""
        schedule = run.schedule
        floor = float(torch.exp(-schedule.log_snr(torch.tensor(0.0, dtype=torch.float64))))
        if rho <= floor:
            raise ValueError(
                f"PnP-DM's coupling level {rho:.3g} is not above the schedule's smallest noise "
                f"level {floor:.3g}: raise rho_min"
            )
        if self.prior_steps == 1:
            times = schedule.time_of(torch.tensor([-math.log(rho)], dtype=torch.float64))
        else:
            bottom = max(min(self.sigma_min, rho / 10), floor)
            times = level_times(schedule, rho, bottom, self.prior_steps - 1)
        times = torch.cat([times, times.new_zeros(1)])
        alpha, _ = schedule(times[0])
        x = float(alpha) * z
        for t, s in itertools.pairwise(times):
            (alpha_t, sigma_t), (alpha_s, sigma_s) = schedule(t), schedule(s)
            x_hat = run.denoise(x, t)
            x = ddim_update(
                x, x_hat, float(alpha_t), float(sigma_t), float(alpha_s), float(sigma_s), 1.0,
                run.generator,
            )  # fmt: skip
        return x

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        rho = self.coupling(step)
        where = f"PnP-DM at t = {float(step.t):.4g}"
        z = self.likelihood_step(run, x_t, rho, where)
        return self.prior_step(run, z, rho)
