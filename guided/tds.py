r"""The twisted diffusion sampler (TDS) for differentiable operators with Gaussian noise.

A particle filter whose twisting function at time :math:`t` approximates the likelihood
through the denoised estimate,

.. math:: \tilde p_t(y \mid x_t) = \mathcal{N}\big(y;\ A(\hat x(x_t)),\
    (\sigma_y^2 + r_t^2) I\big), \qquad r_t^2 = \frac{\lambda_t^2}{1 + \lambda_t^2},
    \quad \lambda_t = \sigma_t / \alpha_t

(the variance of :math:`x \mid x_t` for unit-variance data, as in PiGDM; TDS's "type 2").
From :math:`t` to :math:`s` each particle moves by the twisted proposal: the prior's
ancestral transition :math:`\mathcal{N}(m, \tau^2)`, :math:`m = a \hat x + b x_t`, evaluated
at the guided estimate :math:`\hat x + \frac{\sigma_t^2}{\alpha_t} \nabla_{x_t} \log \tilde
p_t(y \mid x_t)`, and is weighted by

.. math:: w = \frac{p(x_s \mid x_t)\, \tilde p_s(y \mid x_s)}{q(x_s \mid x_t)\,
    \tilde p_t(y \mid x_t)},

the numerator's twist being evaluated at the next step, where :math:`\hat x(x_s)` is computed
anyway (at the first step the weight is :math:`\tilde p_T(y \mid x_T)`, since
:math:`x_T \sim p_T`). The last transition is deterministic (:math:`\tau = 0`): it takes the
untwisted mean, and the final weight replaces the twist by the exact likelihood
:math:`\mathcal{N}(y; A x_0, \sigma_y^2 I)`. So the target is the exact posterior as the number
of particles grows, whatever the twist's quality; one row's output is one particle drawn from
its system's final weights. Cost: :math:`N` network evaluations and :math:`N` VJPs per step
and output row.

The target is the likelihood times the marginal of the prior's sampling chain (DDPM steps),
so it is exact as the particles and the steps grow. At 32 particles the weights of an
informative measurement degenerate: the variance ratio along the observed directions on
Gaussian priors (``python -m experiments.benchmarks.posterior_variance``) was 0.87 to 1.01 at
:math:`d = 3`, :math:`\sigma_y = 0.5` but 0.59 to 0.86 at :math:`d = 8`, :math:`\sigma_y` 0.3
and 1 (0.70 to 0.92 at 1000 steps), and at :math:`\sigma_y = 0.01` the particles never reach
the likelihood's peak: the variance was 144 to 21848 times the posterior's at 100 steps (1.07
to 1.76 at 1000). :class:`guided.MCGdiff` conditions its proposal on linear measurements
exactly and is the better choice for them.

**The Tweedie twist (our variant, not in the paper).** With ``twist="tweedie"`` (linear
operators only) the twist takes MMPS's Gaussian approximation of :math:`p(y \mid x_t)`
(:class:`guided.MMPS`) instead of the isotropic variance:

.. math:: \tilde p_t(y \mid x_t) \propto \exp\big(-\tfrac12 r^\top \Sigma_t^{-1} r\big),
    \qquad r = y - A \hat x, \qquad \Sigma_t = \sigma_y^2 I + \gamma_t A J A^\top,

with :math:`J = \partial \hat x / \partial x_t`, :math:`\gamma_t = \sigma_t^2 / \alpha_t`,
:math:`u = \Sigma_t^{-1} r` by ``iterations`` conjugate-gradient steps (each one
vector-Jacobian product, as in MMPS), the twist's value :math:`-\frac12 r^\top u` and the
proposal's shift along :math:`J^\top A^\top u` (MMPS's likelihood score: :math:`\Sigma_t`
held constant in :math:`x_t`). On a Gaussian prior this twist is the exact :math:`p(y \mid
x_t)` up to a factor common to all particles once CG has converged (:math:`\dim y`
iterations in exact arithmetic, ``iterations=None``): with 4 particles its samples have the
posterior's variance along the observed directions (ratio 0.84 to 0.93 at 100 steps) where
the isotropic twist's have 0.39 to 0.49 (tested).
The factor :math:`\det \Sigma_t^{-1/2}` is left out: it needs :math:`\Sigma_t` itself, and
on a mixture it differs between particles, so the twist is then not :math:`p(y \mid x_t)`'s
Gaussian approximation but a function of :math:`x_t` close to it. Any positive twist keeps
the target exact (the weights correct it), so this changes the efficiency, not the limit.
Cost per particle and step: one network evaluation and ``iterations`` + 1 VJPs. As in MMPS,
:math:`J w` is taken as :math:`J^\top w` (exact where :math:`\gamma_t J` is a covariance, a
network's Jacobian only approximately symmetric). TDS (Wu et al.) twists with an isotropic
variance; the covariance is MMPS's (Rozet et al., 2024); the twist built from it is ours.

References:
    | Practical and Asymptotically Exact Conditional Sampling in Diffusion Models
    | (Wu et al., 2023) https://arxiv.org/abs/2306.17775
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch

from torch import Tensor

import checks

from guided.ddim import ddim_coefficients
from guided.guidance import check_differentiable, check_measurement, check_structure
from guided.mmps import tweedie_solve
from guided.sampler import Run, Step
from guided.smc import Particles, ParticleSampler
from operators import LinearOperator, Operator, batch_dot
from priors import record
from priors.tweedie import likelihood_gain

__all__ = ["MAX_EXACT_ITERATIONS", "TDS", "TWISTS", "Twisted"]

TWISTS = ("isotropic", "tweedie")
"""The twists of :class:`TDS` (see the module)."""
MAX_EXACT_ITERATIONS = 64
r"""The largest :math:`\dim y` for which :class:`TDS` takes ``iterations=None`` (one
conjugate-gradient iteration per measurement, each one VJP per particle and step)."""


@dataclass
class Twisted(Particles):
    """The particles' state plus the weight terms still owed to each particle (the twist
    ratio of its last move, settled at the next step or in :meth:`TDS.final_log_weights`)."""

    pending: Tensor | None = None


class TDS(ParticleSampler):
    r"""The twisted diffusion sampler (see the module).

    Arguments:
        op: A differentiable operator.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level, positive.
        particles: Particles :math:`N` per output row.
        ess: The resampling threshold (see :class:`~guided.smc.ParticleSampler`).
        twist: ``"isotropic"`` (the paper's, the default) or ``"tweedie"`` (MMPS's covariance,
            linear operators only; see the module).
        iterations: Conjugate-gradient iterations of the ``"tweedie"`` twist (each one VJP),
            or None for :math:`\dim y` of them (which solve its system on a Gaussian prior in
            exact arithmetic; refused above :data:`MAX_EXACT_ITERATIONS` measurements).
    """

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float,
        particles: int = 16,
        ess: float = 0.5,
        twist: str = "isotropic",
        iterations: int | None = 3,
    ) -> None:
        self.y = check_measurement(op, y, sigma_y)
        check_differentiable(op, "TDS")
        if twist not in TWISTS:
            raise ValueError(f"twist must be one of {TWISTS}, got {twist!r}")
        if twist == "tweedie":
            check_structure(
                op, LinearOperator, "TDS's tweedie twist", "adjoint", 'use twist="isotropic"'
            )
        self.twist = twist
        if iterations is None:
            iterations = math.prod(op.out_shape)
            if iterations > MAX_EXACT_ITERATIONS:
                raise ValueError(
                    f"iterations=None takes dim y = {iterations} conjugate-gradient iterations, "
                    f"one VJP each, per particle and step (at most {MAX_EXACT_ITERATIONS}): give "
                    "an integer number of iterations (MMPS's default is 3)"
                )
        self.iterations = checks.integer(iterations, "iterations", low=1)
        if not checks.number(sigma_y, "sigma_y", low=0) > 0:
            raise ValueError(
                "TDS needs sigma_y > 0 (its final weight is the Gaussian likelihood); for "
                "noiseless linear data use guided.MCGdiff or guided.DDRM"
            )
        super().__init__(particles, ess)
        self.op, self.sigma_y = op, float(sigma_y)

    def _log_twist(self, x_hat: Tensor, var: float, batch: int) -> Tensor:
        r""":math:`\log \mathcal{N}(y; A \hat x, var)` per row, constants dropped."""
        r = (self.rows(self.y, batch).to(x_hat.dtype) - self.op(x_hat)).flatten(1)
        return -0.5 * r.pow(2).sum(1) / var

    def _tweedie_twist(
        self, x: Tensor, x_hat: Tensor, alpha_t: float, sigma_t: float, batch: int
    ) -> tuple[Tensor, Tensor]:
        r"""The tweedie twist :math:`-\frac12 r^\top u`, :math:`\Sigma_t u = r`, per row, and
        its gradient with :math:`\Sigma_t` held constant, :math:`J^\top A^\top u` (the last
        VJP, counted by the caller); ``x_hat`` carries the graph from ``x``."""
        op = self.op
        gamma = float(likelihood_gain(alpha_t, sigma_t))
        residual = self.rows(self.y, batch).to(x_hat.dtype) - op(x_hat.detach())
        u = tweedie_solve(op, self.sigma_y, x, x_hat, gamma, residual, self.iterations)
        (grad,) = torch.autograd.grad(x_hat, x, op.adjoint(u))
        return -0.5 * batch_dot(residual, u), grad

    pure_noise = True  # at alpha_t = 0 the proposal is untwisted (likelihood_gain); weights exact

    def new_state(self) -> Twisted:
        return Twisted()

    def step(self, run: Run, x_t: Tensor, step: Step, state: Twisted) -> Tensor:
        t, generator = step.t, run.generator
        x_t, cond = self.begin(run, x_t, step, state, self.y)
        if state.pending is None:
            state.pending = torch.zeros_like(state.log_w)
        batch, n = state.systems, self.particles
        alpha_t, sigma_t = step.alpha_t, step.sigma_t
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            x_hat = run.denoiser(x, t, **cond)
            if self.twist == "tweedie":
                log_twist, grad = self._tweedie_twist(x, x_hat, alpha_t, sigma_t, batch)
            else:
                var = self.sigma_y**2 + sigma_t**2 / (alpha_t**2 + sigma_t**2)
                log_twist = self._log_twist(x_hat, var, batch)
                (grad,) = torch.autograd.grad(log_twist.sum(), x)
        record(vjp_rows=x.shape[0])
        x_hat, log_twist = x_hat.detach(), log_twist.detach().double()
        log_w = state.log_w + state.pending + log_twist.view(batch, n)
        idx, log_w = self.resample_where_needed(log_w, generator)
        if idx is not None:
            x_t, x_hat, grad, log_twist = x_t[idx], x_hat[idx], grad[idx], log_twist[idx]
        state.log_w = log_w
        a, b, tau = ddim_coefficients(*step.coefficients, 1.0)
        mean = a * x_hat + b * x_t
        if tau == 0:  # deterministic last step: untwisted, the likelihood weighs in finish
            state.pending = -log_twist.view(batch, n)
            return mean
        shift = a * likelihood_gain(alpha_t, sigma_t) * grad
        x_s = mean + shift + tau * self.noise(mean.shape, generator, mean)
        # log p(x_s | x_t) - log q(x_s | x_t) - log twist_t(x_t)
        d_p = (x_s - mean).flatten(1).double().pow(2).sum(1)
        d_q = (x_s - mean - shift).flatten(1).double().pow(2).sum(1)
        state.pending = ((d_q - d_p) / (2 * tau**2) - log_twist).view(batch, n)
        return x_s

    def final_log_weights(self, x: Tensor, state: Twisted) -> Tensor:
        batch, n = state.log_w.shape
        log_lik = self._log_twist(x, self.sigma_y**2, batch).double().view(batch, n)
        return state.log_w + state.pending + log_lik
