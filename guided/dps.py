r"""Diffusion posterior sampling (DPS).

DPS replaces :math:`p(y \mid x_t)` by :math:`p(y \mid x = \hat x(x_t))`. For Gaussian noise,

.. math:: \nabla_{x_t} \log p(y \mid x_t) \approx -\frac{1}{2\sigma_y^2}
    \nabla_{x_t} \lVert y - A(\hat x) \rVert^2 ,

and the paper's practical step uses the normalised size
:math:`\zeta_i = \zeta' / \lVert y - A(\hat x) \rVert` on the squared norm (Chung et al.,
Alg. 1 and App. D.1), :math:`\zeta_i \nabla \lVert y - A(\hat x) \rVert^2 = 2 \zeta'
\nabla \lVert y - A(\hat x) \rVert`. The official code steps by ``scale`` times the gradient of
the norm itself, so its ``scale`` is :math:`2 \zeta'`; our :math:`\zeta` is the code's
``scale``: :math:`g = -\zeta \nabla_{x_t} \lVert y - A(\hat x) \rVert` (the configs' 0.3 to 1
are values of ours). The official code also takes the norm over the whole batch, which
couples samples; here it is per sample.

**Step sizes across budgets.** As a guidance term the normalised gradient enters the score, so
the sampler scales it by its step: under DDPM the term moves :math:`x_s` by
:math:`\alpha_t \alpha_s (\bar\sigma_t^2 - \bar\sigma_s^2)\, g`, :math:`\bar\sigma =
\sigma / \alpha` (deepinv's ``weight`` times :math:`\beta(t)\,dt / 2` is the same
displacement), and its :math:`\hat x` shift :math:`\frac{\sigma_t^2}{\alpha_t} g = \zeta\,
\mathrm{Cov}[x \mid x_t]\, J_A^\top \hat r` (:math:`\hat r` the unit residual) is carried
into :math:`x_s` in proportion to the step's share :math:`1 - \bar\sigma_s^2 / \bar\sigma_t^2`
of the log noise level. Near pure noise that shift is as large as the prior's spread times
:math:`\zeta`, and a coarse grid carries all of it in one step: on the cosine schedule with
10 uniform steps the first step goes from :math:`\bar\sigma = 1000` to 6.3 with a share of
1, which is why a :math:`\zeta` tuned at 100 steps fails at 25 (measured on digits, box
inpainting: 26.8 dB at 100 steps, 19.1 at 25, at :math:`\zeta = 100`). With ``taper``
:math:`= p > 0` the step is weighted by a power of the signal fraction of :math:`x_t`,

.. math:: \zeta_t = \zeta\, w_t^p, \qquad w_t = \frac{\alpha_t^2}{\alpha_t^2 + \sigma_t^2} = 1 -
    r_t^2

(:math:`r_t^2` is :class:`~guided.PiGDM`'s posterior variance of unit-variance data), which
is 0 where :math:`x_t` carries no signal and 1 where the noise is small; :math:`p = 1` is
the full taper, :math:`0 < p < 1` a softer one that keeps more of the early steps, and
``taper=0`` (the default) none. This is our parameterisation, not the paper's: on digits box
inpainting one value (:math:`\zeta = 300`, :math:`p = 1`) stays within 1 dB of the best over
:math:`\zeta` at 25, 100 and 250 steps, a test checks it
(``tests/experiments/test_dps_budgets.py``); the figures are in ``docs/methods/dps.md``. On
digits SR x4 the untapered step on deepinv's ``"linear_beta"`` grid (below) carried from 25
to 100 steps and scored more than the tapered one; ``experiments.benchmarks.tune_methods``
chooses the grid and :math:`p` per prior and task.

deepinv's ``deepinv.sampling.DPS`` (its DDPM solver on its variance-preserving SDE) is the
untapered term with :math:`\zeta` = ``weight`` / 2 (its residual norm is taken on images in
[0, 1]) on the ``"linear_beta"`` grid of :func:`~guided.time_grid`, its solver the ancestral
step with the posterior variance, as :class:`~guided.DDPM` is. With the deterministic step
(DDIM) on both sides the two loops take the same steps from the same start
(``tests/experiments/test_peers.py``). deepinv's DPS clips its denoised estimate to [-1, 1]
in its [0, 1] units at every step, [-3, 1] in ours: at white only, so where the estimate
passes white its steps differ from ours by thousandths (unguided, 25 steps, 64 samples: at
most 0.0034), and its output never passes white. Under DDPM both draw one standard normal tensor
per step, so from generators of the same seed, with our estimate clamped at white as
deepinv's is, the guided loops agree too (tested); each from its own generator, they draw at
the same level (the spread of DDPM about DDIM agrees within 3%, tested) and score alike
(digits SR x4, ten noise seeds: the benchmarks page).

**Clamping the estimate.** With ``clip=(lo, hi)`` the term clamps :math:`\hat x` to the range
before the residual, so no guidance passes through a clamped pixel: ``clip=(-3, 1)`` is
deepinv's clamp, ``clip=(-1, 1)`` the authors' (their configuration sets ``clip_denoised:
True``, and the estimate their measurement step takes is the clamped one,
``guided_diffusion/posterior_mean_variance.py``; they clamp the estimate of the DDPM mean as
well, which here is the sampler's, unclamped). Unclamped is the default, the likelihood
approximation as written.

Two forms:

- :class:`DPS`, a :class:`~guided.guidance.Guidance` term in the Tweedie form: with
  ``zeta=None`` it is the likelihood score above (needs :math:`\sigma_y > 0`), with
  ``zeta`` the normalised gradient (optionally tapered, above); it works with every sampler.
- :class:`DPSSampler`, the paper's exact update: an ancestral DDPM step from
  :math:`\hat x`, then :math:`x_s \leftarrow x_s - \zeta \nabla_{x_t} \lVert y - A(\hat x)
  \rVert` (the hyper-parameters of the paper, e.g. :math:`\zeta = 0.3`-1, refer to this
  form).

Poisson measurements (:class:`PoissonDPS`) use the paper's weighted norm
:math:`\lVert y - A(\hat x) \rVert_\Lambda`, :math:`\Lambda = \operatorname{diag}(1 / 2
\operatorname{Var} y)`: the paper writes :math:`1 / 2y` for raw counts, whose variance is the
count; with :class:`operators.PoissonNoise`'s gain :math:`\gamma` the measurement is
:math:`y = \gamma c`, :math:`c \sim \mathrm{Poisson}(A x / \gamma)`, so
:math:`\operatorname{Var} y = \gamma A x \approx \gamma y` (a count of 0 weighs as a count of
1, :math:`\operatorname{Var} y = \gamma \max(y, \gamma)`).

References:
    | Diffusion Posterior Sampling for General Noisy Inverse Problems (Chung et al., 2023)
    | https://arxiv.org/abs/2209.14687
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from torch import Tensor

import checks

from guided.ddim import ddim_update
from guided.guidance import Guidance, check_differentiable, check_measurement
from guided.sampler import Run, Sampler, SamplerState, Step
from operators import Operator, batch_dot
from priors import Schedule
from priors.tweedie import append_dims

__all__ = ["DPS", "DPSSampler", "PoissonDPS"]


class DPS(Guidance):
    r"""DPS likelihood term (Tweedie form).

    Arguments:
        op: A differentiable operator (linear or not).
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level (used when ``zeta`` is None; otherwise only by the
            divergence check, and None when unknown).
        zeta: The normalised step :math:`\zeta`; None for the likelihood score
            :math:`-\nabla \lVert y - A \hat x \rVert^2 / 2\sigma_y^2`.
        weight: A multiplier of the term.
        taper: The exponent :math:`p \ge 0` of the signal fraction :math:`w_t = \alpha_t^2 /
            (\alpha_t^2 + \sigma_t^2)` that weights the normalised step, :math:`\zeta\,
            w_t^p` (see the module): 0 (the default) for none, 1 for the full taper; above 0
            only with ``zeta`` (keyword only).
        clip: A range :math:`(lo, hi)` that :math:`\hat x` is clamped to before the residual,
            so that no guidance passes through a clamped pixel (the clamp's derivative is 0
            there); None (the default) for none (keyword only). The authors' code clamps to
            the data range, [-1, 1]; deepinv's DPS to [-3, 1] in our units (see the module).
    """

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float | None,
        zeta: float | None = None,
        weight: float = 1.0,
        *,
        taper: float = 0.0,
        clip: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.y = check_measurement(op, y, sigma_y)
        if self.differentiates_operator:
            check_differentiable(op, "DPS")
        if zeta is None and self.score_needs_sigma_y and not (sigma_y is not None and sigma_y > 0):
            raise ValueError("DPS with zeta=None is the likelihood score and needs sigma_y > 0")
        if zeta is not None:
            zeta = checks.number(zeta, "zeta", low=0)
        taper = checks.number(taper, "taper", low=0)
        if taper > 0 and zeta is None:
            raise ValueError(
                f"taper weights the normalised step: give zeta (taper={taper:g} with zeta=None, "
                "the likelihood score, would change the likelihood)"
            )
        self.clip = None if clip is None else checks.interval(clip, "clip")
        self.op, self.zeta, self.taper = op, zeta, taper
        self.sigma_y = None if sigma_y is None else float(sigma_y)
        self.weight = checks.number(weight, "weight", low=0)

    #: Whether :meth:`residual_and_direction` needs the operator's vector-Jacobian products.
    differentiates_operator: ClassVar[bool] = True
    #: Whether the likelihood-score form (``zeta=None``) is defined by ``sigma_y``.
    score_needs_sigma_y: ClassVar[bool] = True

    def residual_weights(self) -> Tensor | float:
        """:math:`\\Lambda` of the weighted residual norm (1 for Gaussian noise)."""
        return 1.0

    def score_scale(self) -> float:
        r""":math:`c` such that the likelihood score is :math:`c\, J_A^\top \Lambda (y - A
        \hat x)` (:math:`1 / \sigma_y^2` for Gaussian noise)."""
        assert self.sigma_y is not None  # refused at construction for the score form
        return 1 / self.sigma_y**2

    def residual_and_direction(self, x_hat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""The residual :math:`y - A(\hat x)`, its weighting :math:`\Lambda (y - A \hat x)`
        and the direction :math:`-\frac12 \nabla_{\hat x} \lVert y - A(\hat x)
        \rVert_\Lambda^2 = J_A(\hat x)^\top \Lambda (y - A \hat x)`, the residual and the
        pull-back from one forward pass of the operator
        (:meth:`~operators.Operator.linearize`). Estimators of the direction override this."""
        out, pullback = self.op.linearize(x_hat)
        residual = self.y.to(x_hat.dtype) - out
        weighted = self.residual_weights() * residual
        return residual, weighted, pullback(weighted)

    def vector(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        x_hat = x_hat.detach()
        inside = None
        if self.clip is not None:
            lo, hi = self.clip
            inside = (x_hat >= lo) & (x_hat <= hi)
            x_hat = x_hat.clamp(lo, hi)
        residual, weighted, direction = self.residual_and_direction(x_hat)
        if inside is not None:
            direction = direction * inside
        if self.zeta is None:
            return self.weight * self.score_scale() * direction
        norm = batch_dot(residual, weighted).clamp_min(1e-30).sqrt()
        step = self.weight * self.zeta / norm
        if self.taper > 0:
            alpha_t, sigma_t = schedule(t)
            step = step * (alpha_t**2 / (alpha_t**2 + sigma_t**2)).to(step) ** self.taper
        return direction * append_dims(step, x_hat.ndim)


class PoissonDPS(DPS):
    r"""DPS for Poisson measurements :math:`y = \gamma c`, :math:`c \sim \mathrm{Poisson}(A x /
    \gamma)` (:class:`operators.PoissonNoise` with gain :math:`\gamma`), with the Gaussian
    approximation :math:`\mathcal{N}(y;\ A x,\ \operatorname{Var} y)`,
    :math:`\operatorname{Var} y = \gamma \max(y, \gamma)` (see the module): the residual norm is
    weighted by :math:`\Lambda = 1 / 2 \operatorname{Var} y`, and the likelihood score
    (``zeta=None``) is :math:`J_A^\top (y - A \hat x) / \operatorname{Var} y`.

    Arguments:
        op: A differentiable operator with non-negative outputs.
        y: The measurement (non-negative intensities, in the units of the noise model).
        zeta: The normalised step :math:`\zeta`; None for the likelihood score.
        weight: A multiplier of the term.
        gain: The noise model's gain :math:`\gamma > 0` (keyword only: the measurement's
            variance depends on it).
    """

    score_needs_sigma_y: ClassVar[bool] = False

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        zeta: float | None = 1.0,
        weight: float = 1.0,
        *,
        gain: float,
    ) -> None:
        super().__init__(op, y, 0.0, zeta, weight)
        self.gain = checks.number(gain, "gain", low=0, open_low=True)
        if bool((self.y < 0).any()):
            raise ValueError("Poisson measurements y must be non-negative")

    def variance(self) -> Tensor:
        r""":math:`\operatorname{Var} y = \gamma \max(y, \gamma)` (at least one count)."""
        return self.gain * self.y.clamp_min(self.gain)

    def residual_weights(self) -> Tensor:
        return 1 / (2 * self.variance())

    def score_scale(self) -> float:
        return 2.0


class DPSSampler(Sampler):
    r"""The DPS paper's update: ancestral DDPM step from :math:`\hat x(x_t)`, then
    :math:`x_s \leftarrow x_s - \zeta \nabla_{x_t} \lVert y - A(\hat x) \rVert` per sample
    (1 NFE and 1 VJP per step; the paper runs 1000 steps).

    Arguments:
        op: A differentiable operator (any operator with a derivative-free ``estimator``).
        y: The measurement.
        zeta: The step size :math:`\zeta`, the official code's ``scale`` (its FFHQ configs use
            0.3 to 1 at 1000 steps).
        estimator: The term that gives :math:`-\zeta \nabla_{x_t} \lVert y - A(\hat x)
            \rVert`, called as ``estimator(op, y, sigma_y, zeta=zeta, **kwargs)``: :class:`DPS`
            (autograd through the operator) or :class:`~guided.ZerothOrder` (a
            Gaussian-smoothing estimate, for black boxes).
        sigma_y: The measurement's noise level, if known: the update does not use it, the
            divergence check does (keyword only).
        kwargs: Passed to ``estimator`` (e.g. ``queries``, ``smoothing``, ``generator``).
    """

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        zeta: float = 1.0,
        estimator: Callable[..., Guidance] | None = None,
        *,
        sigma_y: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.term = (DPS if estimator is None else estimator)(op, y, sigma_y, zeta=zeta, **kwargs)

    pure_noise = True  # the DDPM step and a gradient in x_t: no division by alpha_t

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            x_hat = run.denoise(x, step.t)
            g = self.term(x, step.t, x_hat, run.schedule)  # = -zeta grad ||y - A x_hat||
        # the ancestral (DDPM) step from x_hat, then the DPS correction
        x_s = ddim_update(x_t, x_hat.detach(), *step.coefficients, 1.0, run.generator)
        return x_s + g
