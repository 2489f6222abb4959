r"""FPS-SMC: filtering posterior sampling for linear-Gaussian inverse problems.

In the spectral space of an SVD operator :math:`A = U \operatorname{diag}(s) V^\top`, each
observed coordinate is :math:`\bar y_i = (U^\top y)_i / s_i = \bar x_i + \rho_i n_i` with
:math:`\bar x = V^\top x` and :math:`\rho_i = \sigma_y / s_i`. FPS (Dou & Song) turns the
posterior into a filtering problem with one noisy observation per time of the grid:

1. **The measurement sequence.** A DDIM bridge with the same coefficients as the prior's
   transitions, run on the observed coordinates from :math:`c_T = \bar x_T` (the row's own
   start) towards the clean :math:`\bar y`,

   .. math:: c_s = a\, \bar y + b\, c_t + \tau z, \qquad (a, b, \tau) \text{ of }
       \mathrm{DDIM}(\eta) \text{ from } t \text{ to } s,

   so that :math:`c_t - \bar x_t \approx \alpha_t \rho\, n`: each :math:`c_t` observes the
   diffused state with noise of variance :math:`v_t = \alpha_t^2 \rho_i^2`.
2. **The particle filter.** From :math:`t` to :math:`s`, with the prior's DDIM(:math:`\eta`)
   transition :math:`\mathcal{N}(m(x_t), \tau^2)`, each particle is weighted by the predictive
   density of the next observation, :math:`\prod_i \mathcal{N}(c_{s,i};\ \bar m_i,\ \tau^2 +
   v_{s,i})`, ancestors are resampled, and the new state is drawn from the locally optimal
   proposal: the Gaussian product (gain :math:`K = \tau^2 / (\tau^2 + v_{s,i})`) on the
   observed coordinates and the prior transition elsewhere. The last step (:math:`\tau = 0`)
   keeps the transition's mean and weights it by :math:`\mathcal{N}(\bar y; \bar m, \rho^2)`.

**Twisted weights (the default).** The authors' weights multiply the likelihoods of every
:math:`c_t` along the run, as if each were an independent observation; but every
:math:`c_t` carries the same measurement noise :math:`n`, so the product counts it once per
step and the particles over-concentrate. With ``twisted=True`` (default) each step also
divides by the previous step's potential :math:`\prod_i \mathcal{N}(c_{t,i}; \bar x_{t,i},
v_{t,i})` (no division at the first step), so the target at each time carries only its own
observation and the final one is the chain's prior times :math:`\mathcal{N}(\bar y; \bar x_0,
\rho^2)`: the posterior as particles grow, up to the chain's discretisation (the weighting of
MCGdiff and TDS).

Measured on the linear-Gaussian problems (``python -m experiments.benchmarks.posterior_variance
--steps 100 --particles 1 8 32 --methods FPS "FPS (authors' weights)"``; variance ratios along
the observed directions, 1 is calibrated), with 32 particles: at :math:`\sigma_y` = 0.3 and 1
the authors' weights give 0.44 to 0.58 and 0.22 to 0.27, below their 1-particle figures (1.33
to 1.68 and 0.94 to 1.14), the twisted ones 1.06 to 1.14 and 0.92 to 0.95. At
:math:`\sigma_y = 0.01` both are over-dispersed 52 to 164 times: the bridge's noise at the
last grid point before 0 is far above the posterior's spread there (MCGdiff's grid adaptation
is not built here).

One row's output is one particle drawn from its system's final weights. The authors state the
filter is asymptotically exact as the particles grow. Cost: :math:`N` network
evaluations per step and per output row, no VJP.

**Departures from the reference code** (InverseBench's ``algo/fps.py``, a port of the
authors' ``FPS-SMC-2023``; its 20 particles are our default, the authors' README runs 5):

- The observation noise of spectral coordinate :math:`i` is :math:`\rho_i = \sigma_y / s_i`;
  InverseBench divides the measurement by the singular values but keeps :math:`\sigma_y` as
  the noise of every coordinate, which is right only where :math:`s_i = 1`.
- Its particles all start from one draw :math:`z` (so its first steps are a single particle);
  ours start from ``x_T`` and :math:`N - 1` fresh draws, and the bridge from the row's
  ``x_T``.
- Its step pairs the observation made at the step's start with the state at its end; ours
  observes :math:`c_s` at :math:`s`. It resamples at every step; ours when the effective
  sample size falls below ``ess`` times :math:`N` (every step whose weights are not uniform
  at the default 1).
- The twisted weights (default; see above); ``twisted=False`` is theirs. Their DDIM
  variant takes a share ``c_rate`` of :math:`\sigma_s^2` as fresh noise; ours is DDIM's
  :math:`\eta`, and the authors return the first particle where we draw one from the
  final weights.
- :math:`\eta = 1` by default (DDPM's transitions, under which the bridge is the exact
  backward conditional of the forward chain) where InverseBench uses 0.85: with the twisted
  weights, 32 particles and :math:`\sigma_y = 0.3`, :math:`\eta = 0.85` gave variance ratios
  1.25 to 1.30, :math:`\eta = 1` 1.06 to 1.14.
- :math:`\sigma_y = 0` is refused (the filter's observations need noise); InverseBench floors
  it at :math:`10^{-4}`. :class:`~guided.MCGdiff` handles noiseless measurements.

References:
    | Diffusion Posterior Sampling for Linear Inverse Problem Solving: A Filtering
    | Perspective (Dou & Song, ICLR 2024); the authors' code:
    | https://github.com/ZehaoDou-official/FPS-SMC-2023
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torch import Tensor

import checks

from guided.ddim import ddim_coefficients
from guided.guidance import check_measurement, check_structure
from guided.sampler import Run, Step
from guided.smc import Particles, ParticleSampler, gaussian_log_density, spectral_measurement
from operators import SVDOperator

__all__ = ["FPS"]


@dataclass
class FilterState(Particles):
    """The particle systems and each row's current observation :math:`c_t` (spectral)."""

    observation: Tensor | None = None
    previous: Tensor | None = None


class FPS(ParticleSampler):
    r"""FPS-SMC for an SVD operator with Gaussian noise (see the module).

    Arguments:
        op: The operator, with its SVD.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level, > 0.
        particles: Particles :math:`N` per output row.
        eta: The DDIM stochasticity of the transitions and of the bridge, in :math:`(0, 1]`.
        ess: The resampling threshold (see :class:`~guided.smc.ParticleSampler`).
        twisted: Whether each step divides out the previous step's potential (see the
            module); False is the authors' weighting.
    """

    pure_noise = True  # DDIM coefficients; the potential at alpha_t = 0 is never divided out

    def __init__(
        self,
        op: SVDOperator,
        y: Tensor,
        sigma_y: float,
        particles: int = 20,
        eta: float = 1.0,
        ess: float = 1.0,
        twisted: bool = True,
    ) -> None:
        check_structure(
            op, SVDOperator, "FPS", "U, V and singular values",
            "for other differentiable operators use guided.DPS or guided.PiGDM",
        )  # fmt: skip
        super().__init__(particles, ess)
        self.y = check_measurement(op, y, sigma_y)
        if float(sigma_y) == 0:
            raise ValueError(
                "sigma_y must be > 0 for FPS (its filter observes with noise); for a noiseless "
                "measurement use guided.MCGdiff"
            )
        self.op, self.sigma_y = op, float(sigma_y)
        self.eta = checks.number(eta, "eta", low=0, high=1, open_low=True)
        self.twisted = checks.flag(twisted, "twisted")
        self.y_bar, self.observed, s = spectral_measurement(op, self.y)
        self.rho2 = torch.where(self.observed, (self.sigma_y / s) ** 2, 0.0)

    def new_state(self) -> FilterState:
        return FilterState()

    def step(self, run: Run, x_t: Tensor, step: Step, state: Particles) -> Tensor:
        assert isinstance(state, FilterState)
        generator, op = run.generator, self.op
        initial = state.log_w is None
        x_t, cond = self.begin(run, x_t, step, state, self.y)
        batch, n = state.systems, self.particles
        a, b, tau = ddim_coefficients(*step.coefficients, self.eta)
        device = x_t.device
        observed = self.observed.to(device)
        y_bar = self.y_bar.to(device).expand(batch, *self.y_bar.shape[1:])
        if initial:  # the bridge starts from each row's x_T (its first particle)
            start = op.Vt(x_t.view(batch, n, *x_t.shape[1:])[:, 0]).double()
            state.observation = torch.where(observed, start, 0.0)
        assert state.observation is not None
        bridge = self.noise(state.observation.shape, generator, state.observation)
        c_s = a * y_bar + b * state.observation + tau * bridge
        state.observation = torch.where(observed, c_s, 0.0)
        x_hat = run.denoiser(x_t, step.t, **cond)
        mb = op.Vt(a * x_hat + b * x_t).double()
        var_s = step.alpha_s**2 * self.rho2.to(device)
        target = self.rows(state.observation, batch)
        mask = observed.expand_as(mb)
        log_w = gaussian_log_density(mb - target, tau**2 + var_s, mask)
        if self.twisted and not initial:
            xb_t = op.Vt(x_t).double()
            var_t = step.alpha_t**2 * self.rho2.to(device)
            previous = self.rows(state.previous, batch)
            log_w = log_w - gaussian_log_density(xb_t - previous, var_t, mask)
        state.previous = state.observation  # the potential the next step divides out
        log_w = state.log_w + log_w.view(batch, n)
        idx, log_w = self.resample_where_needed(log_w, generator)
        if idx is not None:
            mb = mb[idx]
        state.log_w = log_w
        z = self.noise(mb.shape, generator, mb)
        gain = tau**2 / (tau**2 + var_s).where(observed, 1.0)
        conditioned = gain * target + (1 - gain) * mb + (gain * var_s).sqrt() * z
        xb_s = torch.where(mask, conditioned, mb + tau * z)
        return op.V(xb_s.to(x_t.dtype))
