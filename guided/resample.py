r"""ReSample: hard data consistency and stochastic resampling on a latent prior (Song et al.,
ICLR 2024).

DDIM runs on the latents; at the steps of a set :math:`\mathcal C` it replaces the latent by
one that fits the measurement and puts it back on the diffusion's marginal:

1. **Hard data consistency.** From the clean latent estimate :math:`\hat z_0 = \hat z(z_t)`,
   optimise :math:`\min_z \lVert y - A(D(z)) \rVert^2` (Adam, up to ``iterations`` steps of a
   decoder pass and a VJP through it), stopping a sample once its root-mean-square residual
   reaches ``tolerance`` (by default the noise level :math:`\sigma_y`: fitting the noise too is
   what the early stop avoids): :math:`\hat z_0(y)`.
2. **Stochastic resampling.** With :math:`z_s'` the unconditional DDIM step from
   :math:`z_t`, draw

   .. math:: z_s \sim \mathcal N\Big(\frac{\rho^2 \alpha_s \hat z_0(y) + \sigma_s^2 z_s'}
       {\rho^2 + \sigma_s^2},\ \frac{\rho^2 \sigma_s^2}{\rho^2 + \sigma_s^2} I\Big), \qquad
       \rho^2 = \gamma\, \tilde\beta_{t \to s},

   the product of the forward marginal :math:`\mathcal N(\alpha_s \hat z_0(y), \sigma_s^2 I)`
   and a Gaussian of variance :math:`\rho^2` about :math:`z_s'` (their Eq. 11 and Prop. 4.2),
   :math:`\tilde\beta_{t \to s} = \sigma_s^2 (1 - \alpha_t^2 \sigma_s^2 / \alpha_s^2 \sigma_t^2)`
   the DDPM posterior variance (for variance-preserving schedules their
   :math:`\frac{1 - \bar\alpha_s}{1 - \bar\alpha_t}(1 - \bar\alpha_t / \bar\alpha_s)`), and
   :math:`\gamma` their hyper-parameter (40 in their code).

:math:`\mathcal C` is every ``every``-th step of the last ``share`` of the run (the authors:
every 10th of the last two thirds, not the final step), and the run ends with one more
consistency optimisation of the final latent (``polish``, as their code does). Optionally,
a DPS term through the decoder guides every step (``zeta``; :class:`~guided.LatentDPS`'s term).

**Departures from the authors' code** (``ldm/models/diffusion/ddim.py`` of
``soominkwon/resample``, ``resample_sampling``):

- **Early stop.** They stop at a fixed mean squared residual :math:`10^{-6}` (and when the loss
  stops falling over 200 iterations); ours at the noise level per sample (``tolerance``),
  and their loss is a mean over the batch (coupling its samples through Adam's step only by
  scale, since Adam is per entry), ours a sum of per-sample means.
- **Estimate.** Before each consistency step they run 5 unconditional DDIM steps ahead and
  optimise from that point's estimate ("time travel"); we start from the current step's
  :math:`\hat z_0`. In the middle third of the run they optimise in pixel space and encode the
  result; we optimise latents throughout (no encoder call).
- **DPS.** Their code adds a DPS step of scale :math:`\bar\alpha_t / 2` to every step (the
  authors' direct form); ours is off by default (``zeta=0``) and, when on, is the Tweedie form
  of :class:`~guided.LatentDPS`. Their Adam is AdamW with PyTorch's default weight decay
  0.01; ours has none.

References:
    | Solving Inverse Problems with Latent Diffusion Models via Hard Data Consistency
    | (Song, Kwon, Zhang, Hu, Qu & Shen, ICLR 2024) https://arxiv.org/abs/2307.08123
"""

from __future__ import annotations

import math

from typing import ClassVar

import torch

from torch import Tensor

import checks

from guided.ddim import ancestral_share, ddim_update
from guided.guidance import Guidance
from guided.latent import Decoded
from guided.latent_dps import LatentDPS
from guided.sampler import Run, SamplerState, Step
from operators import Operator
from priors import Autoencoder, Denoiser, randn

__all__ = ["ReSample"]


class ReSample(LatentDPS):
    r"""ReSample on a :class:`~priors.LatentPrior` (see the module). Run as
    ``method(latent_prior, z_T, ts)``; it returns latents.

    Arguments:
        op: A differentiable pixel-space operator.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The measurement's noise level (the default ``tolerance``).
        gamma: :math:`\gamma > 0`, the resampling variance's multiple of the DDPM posterior
            variance (keyword only, as the rest).
        every: The spacing of the consistency steps, in steps.
        share: The last share of the run in which they are taken, in (0, 1].
        iterations: The most Adam steps of one consistency optimisation.
        lr: Adam's learning rate (the authors' 0.005).
        tolerance: The RMS residual at which a sample's optimisation stops (None:
            ``sigma_y``; 0 runs every iteration).
        polish: Whether the final latent is optimised once more.
        zeta: The DPS term's normalised step (0, the default, for none; None for the
            likelihood score).
        taper: The exponent of the signal fraction weighting the DPS term.
        eta: The DDIM stochasticity (0, the default, as the authors).
    """

    method: ClassVar[str] = "ReSample"
    instead: ClassVar[str] = "guided.DPS or guided.DiffPIR"

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float,
        *,
        gamma: float = 40.0,
        every: int = 10,
        share: float = 2 / 3,
        iterations: int = 500,
        lr: float = 5e-3,
        tolerance: float | None = None,
        polish: bool = True,
        zeta: float | None = 0.0,
        taper: float = 0.0,
        eta: float = 0.0,
    ) -> None:
        super().__init__(op, y, sigma_y, zeta, taper=taper, eta=eta)
        self.gamma = checks.number(gamma, "gamma", low=0, open_low=True)
        self.every = checks.integer(every, "every", low=1)
        self.share = checks.number(share, "share", low=0, high=1, open_low=True)
        self.iterations = checks.integer(iterations, "iterations", low=0)
        self.lr = checks.number(lr, "lr", low=0, open_low=True)
        tolerance = self.sigma_y if tolerance is None else tolerance
        self.tolerance = checks.number(tolerance, "tolerance", low=0)
        self.polish = checks.flag(polish, "polish")
        self.decoded: Decoded | None = None
        self.op: Decoded | None = None

    def latent_terms(self, autoencoder: Autoencoder) -> tuple[Guidance, ...]:
        return () if self.zeta == 0 else super().latent_terms(autoencoder)

    def bind(self, autoencoder: Autoencoder) -> None:
        super().bind(autoencoder)
        self.decoded = Decoded(self.pixel_op, autoencoder)
        # the run's checks find the measurement here when no DPS term carries it
        self.op = None if self.terms else self.decoded

    def guided(self, denoiser: Denoiser) -> Denoiser:
        return super().guided(denoiser) if self.terms else denoiser

    def consistent(self, step: Step) -> bool:
        r"""Whether ``step`` is in :math:`\mathcal C`: counted from the end of the run (the
        last step is 0), every ``every``-th step above 0 within the last ``share``."""
        left = step.count - 1 - step.index
        return 0 < left <= math.floor(self.share * step.count) and left % self.every == 0

    def fit(self, z: Tensor) -> Tensor:
        r""":math:`\hat z_0(y)`: Adam on :math:`\lVert y - A(D(z)) \rVert^2 / m` from ``z``, each
        sample stopping once its RMS residual is at most ``tolerance``."""
        assert self.decoded is not None  # bound at the start of the run
        op, y = self.decoded, self.y.to(z.dtype)
        y = y.expand(z.shape[0], *op.out_shape)
        z = z.detach().clone()
        m, v = torch.zeros_like(z), torch.zeros_like(z)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        active = torch.arange(z.shape[0], device=z.device)
        for k in range(1, self.iterations + 1):
            zk = z[active]
            out, pullback = op.linearize(zk)  # one decoder pass per active sample
            residual = y[active] - out
            going = residual.flatten(1).pow(2).mean(1).sqrt() > self.tolerance
            if not bool(going.any()):
                break
            g = pullback(-residual)  # the gradient of |y - A(D(z))|^2 / 2 (Adam ignores its scale)
            active, g, zk = active[going], g[going], zk.detach()[going]
            m[active] = beta1 * m[active] + (1 - beta1) * g
            v[active] = beta2 * v[active] + (1 - beta2) * g * g
            mhat, vhat = m[active] / (1 - beta1**k), v[active] / (1 - beta2**k)
            z[active] = zk - self.lr * mhat / (vhat.sqrt() + eps)
        return z

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        z_hat = run.denoise(x_t, step.t)
        z_s = ddim_update(x_t, z_hat, *step.coefficients, self.eta, run.generator)
        if not self.consistent(step):
            return z_s
        z0 = self.fit(z_hat)
        _, _, alpha_s, sigma_s = step.coefficients
        rho2 = self.gamma * sigma_s**2 * ancestral_share(*step.coefficients)
        if rho2 == 0 or sigma_s == 0:
            return alpha_s * z0
        mean = (rho2 * alpha_s * z0 + sigma_s**2 * z_s) / (rho2 + sigma_s**2)
        z = randn(z0.shape, run.generator, dtype=z0.dtype, device=z0.device)
        return mean + math.sqrt(rho2 * sigma_s**2 / (rho2 + sigma_s**2)) * z

    def finish(self, run: Run, x: Tensor, state: SamplerState) -> Tensor:
        return self.fit(x) if self.polish else x
