r"""Monte Carlo guided diffusion (MCGdiff) for linear-Gaussian inverse problems.

In the spectral space of an SVD operator :math:`A = U \operatorname{diag}(s) V^\top`, each
observed coordinate is :math:`\bar y_i = (U^\top y)_i / s_i = \bar x_i + \rho_i n_i` with
:math:`\bar x = V^\top x` and :math:`\rho_i = \sigma_y / s_i`. Writing
:math:`\lambda_t = \sigma_t / \alpha_t`, the rescaled observation :math:`\alpha_{\tau_i}
\bar y_i` has exactly the law of the diffused coordinate :math:`\bar x_{\tau_i, i}` at the
time :math:`\tau_i` with :math:`\lambda_{\tau_i} = \rho_i`, so conditioning on :math:`y` is
conditioning the backward chain on :math:`\bar x_{\tau_i, i} = \alpha_{\tau_i} \bar y_i`.
MCGdiff runs a particle filter whose potential for coordinate :math:`i` at a grid time
:math:`u` is the Gaussian

.. math:: g_{u,i}(x_u) = \mathcal{N}\big(\bar x_{u,i};\ \alpha_u \bar y_i,\ v_{u,i}\big),
    \qquad v_{u,i} = \alpha_u^2 \big(\lvert \lambda_u^2 - \rho_i^2 \rvert + \kappa\big).

While :math:`\lambda_u > \rho_i` this is the forward transition from the pinned value (a
twist, replaced at the next step); at the first grid time with :math:`\lambda_u \leq \rho_i`
it is the pin itself, kept in the target from then on: integrating out the noise,
:math:`\int p(x_u \mid x)\, g_{u,i}(x_u)\, dx_u \propto \mathcal{N}(\bar y_i; \bar x_i,
\rho_i^2 + \kappa)`, so the final target is the exact posterior (up to :math:`\kappa`)
whatever the grid. From :math:`t` to :math:`s`, with the prior's DDIM(:math:`\eta`)
transition :math:`\mathcal{N}(m(x_t), \tau^2)` and :math:`\mathcal{A}` the coordinates with
:math:`\lambda_t \geq \rho_i`, each particle is weighted by

.. math:: w = \prod_{i \in \mathcal{A}} \frac{\mathcal{N}(\bar m_i;\ \alpha_s \bar y_i,\
    \tau^2 + v_{s,i})}{g_{t,i}(x_t)}

(no division at the first step, where :math:`x_T \sim p_T`), ancestors are resampled, and
the new state is drawn from the locally optimal proposal: the Gaussian product on
:math:`\mathcal{A}` (gain :math:`K = \tau^2 / (\tau^2 + v_{s,i})`) and the prior transition
elsewhere. For :math:`\sigma_y = 0` the pin is at :math:`t = 0` with variance :math:`\kappa`,
and a deterministic last step (:math:`\tau = 0`) sets the noiseless coordinates to the
measurement. One row's output is one particle drawn from its system's final weights.

Where the smallest :math:`\tau_i` is above 0, the authors' code multiplies the final weights
by :math:`p(y \mid x_0) / g_{\tau}`; here the pins already carry the likelihood, so there is
no final factor (counting the likelihood twice shrinks the posterior; measured on a Gaussian
prior).

The time grid is adapted as in the authors' code: the interior grid point nearest to each
:math:`\tau_i` is moved onto it (the number of steps, hence the cost, is unchanged).
Cost: :math:`N` network evaluations per step and per output row, no VJP.

References:
    | Monte Carlo guided Diffusion for Bayesian linear inverse problems (Cardoso et al., 2024)
    | https://arxiv.org/abs/2308.07983
"""

from __future__ import annotations

import math

from typing import Any

import torch

from torch import Tensor

from guided.ddim import ddim_coefficients
from guided.guidance import check_measurement
from guided.smc import ParticleSampler, gaussian_log_density
from guided.time import check_grid
from operators import SVDOperator
from priors import Denoiser, GeneratorLike, Schedule

__all__ = ["MCGdiff"]


class MCGdiff(ParticleSampler):
    r"""MCGdiff for an SVD operator with Gaussian noise (see the module).

    Arguments:
        op: The operator, with its SVD.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level (0 allowed).
        particles: Particles :math:`N` per output row.
        eta: The DDIM stochasticity of the prior transition, in :math:`(0, 1]` (the
            proposal conditions through the transition's noise, so :math:`\eta > 0`).
        kappa: :math:`\kappa`, the variance that keeps the potential proper at
            :math:`\tau_i` (the authors use :math:`10^{-4}` to :math:`10^{-6}`).
        ess: The resampling threshold (see :class:`~guided.smc.ParticleSampler`).
        adapt_grid: Whether to move grid points onto the times :math:`\tau_i`.
    """

    def __init__(
        self,
        op: SVDOperator,
        y: Tensor,
        sigma_y: float,
        particles: int = 64,
        eta: float = 1.0,
        kappa: float = 1e-4,
        ess: float = 1.0,
        adapt_grid: bool = True,
    ) -> None:
        if not isinstance(op, SVDOperator):
            raise TypeError(
                f"MCGdiff needs an SVDOperator (U, V and singular values); got "
                f"{type(op).__name__}. For other differentiable operators use guided.DPS or "
                "guided.PiGDM (conjugate gradients)"
            )
        super().__init__(particles, ess)
        self.y = check_measurement(op, y, sigma_y)
        if not (isinstance(eta, int | float) and 0 < eta <= 1):
            raise ValueError(f"eta must lie in (0, 1] for MCGdiff, got {eta!r}")
        if not (isinstance(kappa, int | float) and kappa > 0):
            raise ValueError(f"kappa must be positive, got {kappa!r}")
        self.op, self.sigma_y, self.eta, self.kappa = op, float(sigma_y), float(eta), float(kappa)
        self.adapt_grid = bool(adapt_grid)
        z = op.Ut(self.y.double())
        s = op.singulars.to(z.device, torch.float64).expand_as(z[0])
        self.observed = s.abs() > op.rcond
        safe = s.where(self.observed, 1.0)
        self.y_bar = torch.where(self.observed, z / safe, 0.0)  # (B_y, *spectral)
        self.rho = torch.where(self.observed, self.sigma_y / safe.abs(), math.inf)

    def taus(self, schedule: Schedule) -> Tensor:
        r"""The distinct times :math:`\tau_i` with :math:`\lambda_{\tau_i} = \rho_i`."""
        rho = self.rho[self.observed & (self.rho > 0)].unique()
        return schedule.time_of(-torch.log(rho)).unique()

    def adapt(self, ts: Tensor, schedule: Schedule) -> Tensor:
        r"""Moves the interior grid point nearest to each :math:`\tau_i` onto it."""
        ts = check_grid(ts).clone()
        claimed: set[int] = set()
        for tau in self.taus(schedule).tolist():
            if not float(ts[-1]) < tau < float(ts[0]) or ts.numel() < 3:
                continue
            j = int((ts[1:-1] - tau).abs().argmin()) + 1
            if j not in claimed and float(ts[j + 1]) < tau < float(ts[j - 1]):
                ts[j] = tau
                claimed.add(j)
        return ts

    def __call__(self, denoiser: Denoiser, x_T: Tensor, ts: Tensor, **kwargs: Any) -> Tensor:
        if self.adapt_grid and isinstance(denoiser, Denoiser):
            ts = self.adapt(ts, denoiser.schedule)
        return super().__call__(denoiser, x_T, ts, **kwargs)

    def _potential(self, u: Tensor, schedule: Schedule, like: Tensor) -> tuple[Tensor, Tensor]:
        r"""Mean :math:`\alpha_u \bar y` and variance :math:`v_u` of the potential at ``u``."""
        alpha, sigma = (float(c) for c in schedule(u))
        rho = self.rho.to(like.device).where(self.observed.to(like.device), 0.0)
        var = alpha**2 * ((sigma / alpha) ** 2 - rho**2).abs() + alpha**2 * self.kappa
        return alpha * self.y_bar.to(like.device), var

    def step(
        self,
        denoiser: Denoiser,
        x_t: Tensor,
        t: Tensor,
        s: Tensor,
        carry: dict[str, Any],
        *,
        generator: GeneratorLike = None,
        **cond: Any,
    ) -> Tensor:
        schedule = denoiser.schedule
        if "systems" not in carry:
            x_t = self.systems(x_t, t, schedule, carry, generator, self.y)
            carry["initial"] = True
        batch, n = carry["systems"], self.particles
        cond = {k: self.rows(v, batch) for k, v in cond.items()}
        alpha_t, sigma_t = (float(c) for c in schedule(t))
        alpha_s, sigma_s = (float(c) for c in schedule(s))
        x_hat = denoiser(x_t, t, **cond)
        a, b, tau = ddim_coefficients(alpha_t, sigma_t, alpha_s, sigma_s, self.eta)
        tau2 = tau**2
        mean = a * x_hat + b * x_t
        op = self.op
        xb_t, mb = op.Vt(x_t).double(), op.Vt(mean).double()
        # active at s: above tau_i at t (a twist at s, or the pin if s is past tau_i)
        active = self.observed.to(mb.device) & (sigma_t / alpha_t >= self.rho.to(mb.device))
        active = active.expand_as(mb)
        target_s, var_s = self._potential(s, schedule, mb)
        target_s = self.rows(target_s, batch)
        log_w = gaussian_log_density(mb - target_s, tau2 + var_s, active)
        if not carry.pop("initial", False):  # replace the twist at t (not at T: x_T ~ p_T)
            target_t, var_t = self._potential(t, schedule, xb_t)
            log_w = log_w - gaussian_log_density(xb_t - self.rows(target_t, batch), var_t, active)
        log_w = carry["log_w"] + log_w.view(batch, n)
        idx, log_w = self.resample_where_needed(log_w, generator)
        if idx is not None:
            mb = mb[idx]
        carry["log_w"] = log_w
        z = self.noise(mb.shape, generator, mb)
        gain = tau2 / (tau2 + var_s)
        conditioned = gain * target_s + (1 - gain) * mb + (var_s * gain).sqrt() * z
        if tau2 == 0:  # a deterministic last step: noiseless coordinates take the measurement
            exact = (self.rho == 0).to(mb.device).expand_as(mb)
            conditioned = torch.where(exact, target_s.expand_as(mb), mb)
        xb_s = torch.where(active, conditioned, mb + math.sqrt(tau2) * z)
        return op.V(xb_s.to(x_t.dtype))
