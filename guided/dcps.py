r"""DCPS: divide-and-conquer posterior sampling.

DCPS splits the run's grid :math:`t_0 > \dots > t_N` into ``blocks`` blocks of consecutive
transitions and, within the block that ends at the grid point :math:`\tau`, samples towards
the intermediate posterior

.. math:: \pi_\tau(x_\tau) \propto p_\tau(x_\tau)\, g_\tau(x_\tau), \qquad
    g_\tau(x) = \exp\left(-\frac{\lVert \alpha_\tau y - A(x) \rVert^2}{2 \sigma_y^2}\right),

the measurement scaled as the signal is at :math:`\tau` (at :math:`\tau = 0` the true
likelihood). Each block's output is the next block's start, so each block only has to carry
its start (approximately :math:`\pi` of the block above) a short way down: a chain of easier
problems instead of one hard one. Within a block:

1. **Langevin** at the block's top time :math:`t`: ``langevin_steps`` steps of the tamed
   unadjusted Langevin algorithm on :math:`\log p_t(x) + \log g_\tau(m_{\tau \mid t}(x))`,
   where :math:`m_{\tau \mid t}(x)` is the mean of the ancestral (DDPM, :math:`\eta = 1`) jump
   from :math:`t` straight to :math:`\tau` given the denoiser's :math:`\hat x(x, t)`, and the
   prior score is :math:`(\alpha_t \hat x - x) / \sigma_t^2`:

   .. math:: x \leftarrow x + \frac{\gamma}{1 + \gamma \lVert \nabla \rVert} \nabla
       + \sqrt{2 \gamma}\, z.

   One NFE and one VJP per step.
2. **Variational steps**, each transition :math:`t \to s` of the block: the twisted
   transition :math:`p(x_s \mid x_t)\, \hat g(x_s)` with :math:`\hat g(x_s) =
   \mathbb{E}[g_\tau(X_\tau) \mid x_s]` is fitted by a Gaussian
   :math:`q = \mathcal{N}(\mu, \operatorname{diag} e^{2 \rho})`, started at the ancestral
   transition :math:`p(x_s \mid x_t) = \mathcal{N}(m_p, \sigma_p^2 I)` (one NFE), by
   ``gradient_steps`` steps on

   .. math:: \mathcal{L}(\mu, \rho) = \mathrm{KL}(q \,\Vert\, p(\cdot \mid x_t))
       - \log g_\tau(X_\tau), \quad X_\tau \sim p(x_\tau \mid Z), \; Z = \mu + e^\rho \epsilon,

   one reparameterised draw per step (:math:`X_\tau` is the ancestral jump from :math:`s` to
   :math:`\tau` given :math:`\hat x(Z, s)`: one NFE and one VJP; none when :math:`s = \tau`,
   where :math:`X_\tau = Z`). Each step is a normalised gradient step per row whose length
   is measured in the transition's own scale,

   .. math:: \mu \leftarrow \mu - \ell \sigma_p \sqrt{d}\, \frac{\nabla_\mu
       \mathcal{L}}{\lVert \nabla_\mu \mathcal{L} \rVert}, \qquad \rho \leftarrow \rho -
       \ell \sqrt{d}\, \frac{\nabla_\rho \mathcal{L}}{\lVert \nabla_\rho \mathcal{L}
       \rVert}

   (:math:`d` the coordinates per row: :math:`\ell` is a root-mean-square move per
   coordinate, in standard deviations of the transition for :math:`\mu`; :math:`\rho` is
   a log-scale already); then :math:`x_s \sim q`.

The transition to :math:`t = 0` (the last block's last) returns the denoiser's mean
:math:`\hat x(x_t, t)`. Cost of a run of :math:`N` transitions in :math:`B` blocks ending at
0, with :math:`K` gradient and :math:`L` Langevin steps: :math:`N + (N - B) K + B L` NFE and
:math:`(N - B) K + B L` VJPs per sample (the authors' image setting, 300 steps in 3 blocks
with :math:`K = 2`, :math:`L = 5`: 909 NFE). The potential needs :math:`\sigma_y > 0`; the
operator may be any differentiable one (the potential is differentiated by autograd).

**Departures from the authors' code** (``posterior_samplers/dcps.py`` of
``Badr-MOUFAD/dcps``):

- **Blocks on any grid.** They place the block boundaries at equal times
  (``linspace(0, 999, L)``) with equally many uniform steps in each block; ours split the
  run's own grid into ``blocks`` runs of consecutive transitions of equal length (the same
  thing on a uniform grid), so any grid works and the boundaries are grid points.
- **Step length in the transition's scale.** Their normalised step has a fixed length
  ``lr`` in the norm over all coordinates, for :math:`\mu` and :math:`\log` std alike (1.5
  for 256 × 256 colour images, 0.05 for their 20 × 2 trajectories). A fixed length does
  not carry across sizes or budgets: the transition's standard deviation :math:`\sigma_p`
  shrinks as the steps get more, so the same length is a larger move relative to it.
  Ours is :math:`\ell \sqrt d` (per coordinate) and, for the mean, times
  :math:`\sigma_p`. On the Gaussian calibration problems
  (``python -m experiments.benchmarks.posterior_variance --steps 25 100 300 --methods DCPS``)
  :math:`\ell = 0.3` gives observed-direction variance ratios 0.70 to 4.65 over 25, 100
  and 300 steps at :math:`\sigma_y` 0.3 to 1 (1 is calibrated; 0.70 to 1.32 at 100),
  where a fixed length of 0.03 per coordinate, the best we tried, ranged over 0.89 to 26.5
  (4.7 to 26.5 at 25 steps); their image setting, 0.0034 per coordinate, gives 3.4 to 77 at
  100 steps (the fit barely moves from the prior transition). At :math:`\sigma_y = 0.01`
  every setting stays far too wide (41 to 4600 with ours). The default is :math:`\ell = 0.3`;
  the tuning app chose 0.2 on digits box inpainting at 100 steps (PSNR 26.68 against 26.40
  at 0.3; 0.5 collapses to 11.28), which the apps use there.
- **No wasted evaluation.** When :math:`s = \tau` their jump from :math:`s` to :math:`\tau`
  still evaluates the network (and back-propagates through it) and then ignores the result;
  ours does not call it.
- **The last transition.** They stop at the grid's last nonzero time and return that state;
  ours takes the denoiser's mean from it (one NFE), the clean estimate every sampler here
  returns at :math:`t = 0`.
- Their variational steps carry over the previous transition's fit only in a branch their
  code never reaches (``idx > 100``); ours always start from the ancestral transition, as
  their code runs.

References:
    | Divide-and-Conquer Posterior Sampling for Denoising Diffusion Priors
    | (Janati, Moufad, Durmus, Moulines & Olsson, NeurIPS 2024)
    | https://arxiv.org/abs/2403.11407
"""

from __future__ import annotations

import math

import torch

from torch import Tensor

import checks

from guided.ddim import ddim_coefficients
from guided.guidance import check_differentiable, check_measurement
from guided.sampler import Run, Sampler, SamplerState, Step
from operators import Operator
from priors import randn, record

__all__ = ["DCPS"]


class DCPS(Sampler):
    r"""DCPS sampler (see the module).

    Arguments:
        op: A differentiable operator.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The measurement's noise level, :math:`> 0` (the potentials divide by it).
        blocks: How many blocks the run's transitions are split into (at most one per
            transition; the authors' 3).
        langevin_steps: Langevin steps at the top of each block (the authors' 5).
        gamma: The Langevin step :math:`\gamma` (the authors' :math:`10^{-3}`).
        gradient_steps: Gradient steps of each transition's Gaussian fit (the authors' 2).
        lr: The fit's normalised step :math:`\ell`, root-mean-square per coordinate, in
            transition standard deviations for the mean (see the module).
    """

    pure_noise = True  # DDIM coefficients and the prior score (alpha_t x_hat - x) / sigma_t^2

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float,
        *,
        blocks: int = 3,
        langevin_steps: int = 5,
        gamma: float = 1e-3,
        gradient_steps: int = 2,
        lr: float = 0.3,
    ) -> None:
        self.y = check_measurement(op, y, sigma_y)
        check_differentiable(op, "DCPS (its potentials)")
        self.op = op
        self.sigma_y = checks.number(sigma_y, "sigma_y", low=0, open_low=True)
        self.blocks = checks.integer(blocks, "blocks", low=1)
        self.langevin_steps = checks.integer(langevin_steps, "langevin_steps", low=0)
        self.gamma = checks.number(gamma, "gamma", low=0, open_low=True)
        self.gradient_steps = checks.integer(gradient_steps, "gradient_steps", low=0)
        self.lr = checks.number(lr, "lr", low=0, open_low=True)

    def block_ends(self, count: int) -> list[int]:
        """The grid index where each block ends, for a run of ``count`` transitions: equal
        shares of the transitions (``min(blocks, count)`` blocks)."""
        blocks = min(self.blocks, count)
        return [round((k + 1) * count / blocks) for k in range(blocks)]

    def log_potential(self, x: Tensor, alpha_tau: float) -> Tensor:
        r""":math:`\log g_\tau(x) = -\lVert \alpha_\tau y - A(x) \rVert^2 / 2 \sigma_y^2`, per
        row."""
        residual = alpha_tau * self.y.to(x.dtype) - self.op(x)
        return -0.5 * residual.flatten(1).pow(2).sum(1) / self.sigma_y**2

    def langevin(
        self, run: Run, x: Tensor, step: Step, alpha_tau: float, sigma_tau: float
    ) -> Tensor:
        r"""The tamed Langevin steps at the block's top time (see the module)."""
        alpha_t, sigma_t = step.alpha_t, step.sigma_t
        a, b, _ = ddim_coefficients(alpha_t, sigma_t, alpha_tau, sigma_tau, 1.0)
        view = (-1,) + (1,) * (x.ndim - 1)
        for _ in range(self.langevin_steps):
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                x_hat = run.denoise(x, step.t)
                log_g = self.log_potential(a * x_hat + b * x, alpha_tau)
                (grad,) = torch.autograd.grad(log_g.sum(), x)
            record(vjp_rows=x.shape[0])
            x = x.detach()
            drift = (alpha_t * x_hat.detach() - x) / sigma_t**2 + grad
            h = self.gamma / (1 + self.gamma * drift.flatten(1).norm(dim=1).view(view))
            z = randn(x.shape, run.generator, dtype=x.dtype, device=x.device)
            x = x + h * drift + math.sqrt(2 * self.gamma) * z
        return x

    def fit(
        self,
        run: Run,
        x_t: Tensor,
        step: Step,
        alpha_tau: float,
        sigma_tau: float,
        at_tau: bool,
    ) -> Tensor:
        r"""One transition :math:`t \to s`: the Gaussian fit to the twisted transition and a
        draw from it (see the module)."""
        a, b, std = ddim_coefficients(*step.coefficients, 1.0)
        prior_mean = a * run.denoise(x_t, step.t) + b * x_t
        if std <= 0:  # no randomness left to steer (s indistinguishable from t)
            return prior_mean
        a_tau, b_tau, std_tau = ddim_coefficients(
            step.alpha_s, step.sigma_s, alpha_tau, sigma_tau, 1.0
        )
        mean = prior_mean
        log_std = torch.full_like(prior_mean, math.log(std))
        length = self.lr * math.sqrt(x_t[0].numel())  # times sigma_p for the mean
        view = (-1,) + (1,) * (x_t.ndim - 1)

        def draw() -> Tensor:
            return randn(x_t.shape, run.generator, dtype=x_t.dtype, device=x_t.device)

        def normalised(g: Tensor) -> Tensor:
            norm = g.flatten(1).norm(dim=1).clamp_min(torch.finfo(g.dtype).tiny)
            return g / norm.view(view)

        for _ in range(self.gradient_steps):
            with torch.enable_grad():
                mean = mean.detach().requires_grad_(True)
                log_std = log_std.detach().requires_grad_(True)
                z = mean + log_std.exp() * draw()
                if at_tau:
                    x_tau = z
                else:
                    x_tau = a_tau * run.denoise(z, step.s) + b_tau * z
                    if std_tau > 0:
                        x_tau = x_tau + std_tau * draw()
                kl = (log_std.exp() ** 2 + (mean - prior_mean) ** 2) / (2 * std**2) - log_std
                loss = kl.flatten(1).sum(1) - self.log_potential(x_tau, alpha_tau)
                g_mean, g_log_std = torch.autograd.grad(loss.sum(), (mean, log_std))
            if not at_tau:
                record(vjp_rows=x_t.shape[0])
            mean = mean.detach() - length * std * normalised(g_mean)
            log_std = log_std.detach() - length * normalised(g_log_std)
        return mean + log_std.exp() * draw()

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        if run.grid is None:
            raise ValueError("DCPS needs the run's grid (run.grid): call the sampler on a grid")
        ends = self.block_ends(step.count)
        block = next(k for k, end in enumerate(ends) if step.index < end)
        top = ends[block - 1] if block else 0
        alpha_tau, sigma_tau = (float(c) for c in run.schedule(run.grid[ends[block]]))
        if step.index == top and self.langevin_steps:
            x_t = self.langevin(run, x_t, step, alpha_tau, sigma_tau)
        if step.sigma_s == 0:
            return run.denoise(x_t, step.t)
        return self.fit(run, x_t, step, alpha_tau, sigma_tau, step.index + 1 == ends[block])
