r"""Sequential Monte Carlo machinery shared by the particle samplers.

A particle sampler runs, for every row :math:`b` of ``x_T``, its own system of :math:`N`
particles: row :math:`b` starts from ``x_T[b]`` and :math:`N - 1` further draws of
:math:`\sigma_T \epsilon` (the start of :func:`guided.initial_noise`), all its noise and
resampling come from row :math:`b`'s generator when one generator per row is given, and the
output row is one particle drawn from the system's final weights. Inside the loop the state
has shape :math:`(B N, *)`, systems contiguous; callbacks and projections see all particles.

Resampling is multinomial and happens, system by system, when that system's effective sample
size :math:`\mathrm{ESS} = (\sum_j w_j)^2 / \sum_j w_j^2` falls below a fraction of :math:`N`
(with the fraction 1, whenever its weights are not uniform). A system whose ESS stays above
the threshold keeps its particles and weights and draws nothing, so with one generator per
row a row's output never depends on the other rows of the batch.

References:
    | An Introduction to Sequential Monte Carlo (Chopin & Papaspiliopoulos, 2020), ch. 9-10
    | https://doi.org/10.1007/978-3-030-47845-2
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from torch import Tensor

import checks

from guided.sampler import Run, Sampler, SamplerState, Step
from operators import SVDOperator
from priors import GeneratorLike, randn_blocks

__all__ = [
    "ParticleSampler",
    "Particles",
    "effective_sample_size",
    "gaussian_log_density",
    "spectral_measurement",
]


def effective_sample_size(log_w: Tensor) -> Tensor:
    r""":math:`(\sum_j w_j)^2 / \sum_j w_j^2` over the last dimension, from log-weights."""
    return torch.exp(2 * torch.logsumexp(log_w, -1) - torch.logsumexp(2 * log_w, -1))


@dataclass
class Particles(SamplerState):
    """The particle systems of a run: how many rows (systems) and their :math:`(B, N)`
    log-weights (None before the first step)."""

    systems: int = 0
    log_w: Tensor | None = None


class ParticleSampler(Sampler):
    r"""Base class of the SMC samplers (see the module).

    Subclasses call :meth:`begin` at each step (at the first, it expands ``x_T`` into
    particles and fills the :class:`Particles` state), :meth:`noise` for per-system noise,
    :meth:`resample_where_needed` for ancestors and :meth:`rows` to expand per-row tensors
    (measurements, labels) to particles; :meth:`finish` draws one particle per row from
    the state's log-weights.

    Arguments:
        particles: The number :math:`N \geq 1` of particles per row.
        ess: Resample when the effective sample size falls below ``ess`` times :math:`N`,
            in :math:`(0, 1]`.
    """

    def __init__(self, particles: int, ess: float = 1.0) -> None:
        self.particles = checks.integer(particles, "particles", low=1)
        self.ess = checks.number(ess, "ess", low=0, high=1, open_low=True)

    def new_state(self) -> Particles:
        return Particles()

    def begin(
        self, run: Run, x_t: Tensor, step: Step, state: Particles, y: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        r"""The particles at ``step.t`` and the run's conditions expanded to them: at the
        first step the :math:`(B N, *)` initial particles of the module docstring (``x_t``
        is then ``x_T``), with zero log-weights in ``state``; afterwards ``x_t`` itself. A
        measurement ``y`` must have one row for all or one per row of ``x_T``."""
        if state.log_w is None:
            batch, n = x_t.shape[0], self.particles
            if y is not None and y.shape[0] not in (1, batch):
                raise ValueError(f"y has {y.shape[0]} rows for {batch} rows of x_T (need 1 or B)")
            shape = (batch, n - 1, *x_t.shape[1:])
            fresh = step.sigma_t * self.noise(shape, run.generator, x_t)
            x_t = torch.cat([x_t[:, None], fresh], 1).flatten(0, 1)
            state.systems = batch
            state.log_w = torch.zeros(batch, n, dtype=torch.float64, device=x_t.device)
        return x_t, {k: self.rows(v, state.systems) for k, v in run.cond.items()}

    def noise(self, shape: Sequence[int], generator: GeneratorLike, like: Tensor) -> Tensor:
        r"""Standard normal noise of shape :math:`(B, \dots)` or :math:`(B N, \dots)`, row
        :math:`b`'s part from row :math:`b`'s generator."""
        return randn_blocks(shape, generator, dtype=like.dtype, device=like.device)

    def ancestors(self, log_w: Tensor, generator: GeneratorLike) -> Tensor:
        r"""Multinomial ancestors :math:`(R, N)` within each system for weights
        :math:`(R, N)`; with a generator list, system :math:`r` draws from ``generator[r]``."""
        n = log_w.shape[1]
        probs = torch.softmax(log_w, -1)
        if generator is None or isinstance(generator, torch.Generator):
            return torch.multinomial(probs, n, replacement=True, generator=generator)
        return torch.stack(
            [
                torch.multinomial(p, n, replacement=True, generator=g)
                for p, g in zip(probs, generator, strict=True)
            ]
        )

    def resample_where_needed(
        self, log_w: Tensor, generator: GeneratorLike
    ) -> tuple[Tensor | None, Tensor]:
        r"""Resamples the systems whose effective sample size is below the threshold.

        Arguments:
            log_w: The :math:`(B, N)` log-weights.
            generator: A generator, or one per system.

        Returns:
            The flat ancestor indices :math:`(B N,)` into the particles (the identity for the
            systems that keep theirs), or None when no system resamples; and the new
            log-weights (zero for the resampled systems, unchanged for the others).
        """
        batch, n = log_w.shape
        below = effective_sample_size(log_w) < self.ess * n * (1 - 1e-9)
        if not bool(below.any()):
            return None, log_w
        systems = below.nonzero().flatten()
        if generator is not None and not isinstance(generator, torch.Generator):
            generator = [generator[int(b)] for b in systems]
        picked = self.ancestors(log_w[systems], generator)
        idx = torch.arange(batch * n, device=log_w.device).view(batch, n)
        idx[systems] = picked.to(idx.device) + n * systems[:, None].to(idx.device)
        log_w = log_w.clone()
        log_w[systems] = 0.0
        return idx.flatten(), log_w

    def rows(self, value: Any, batch: int) -> Any:
        r"""Expands a per-row tensor :math:`(B, \dots)` to the particles; anything else (a
        tensor shared by all rows, None, a number) passes unchanged."""
        if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == batch > 1:
            return value.repeat_interleave(self.particles, 0)
        return value

    def final_log_weights(self, x: Tensor, state: Particles) -> Tensor:
        r"""The :math:`(B, N)` log-weights that :meth:`finish` draws from (the running
        weights by default; subclasses add a final correction)."""
        return state.log_w

    def finish(self, run: Run, x: Tensor, state: Particles) -> Tensor:
        log_w = self.final_log_weights(x, state)
        if not bool(torch.isfinite(log_w).any(-1).all()):
            raise FloatingPointError(
                f"{type(self).__name__}: every particle of a system has zero weight"
            )
        batch, n = log_w.shape
        pick = self.ancestors(log_w, run.generator)[:, 0]
        return x[pick + n * torch.arange(batch, device=pick.device)]


def gaussian_log_density(r: Tensor, var: Tensor | float, mask: Tensor) -> Tensor:
    r""":math:`-\frac12 \sum_{i \in mask} r_i^2 / v_i` per row (constants dropped, float64)."""
    terms = torch.where(mask, r.double() ** 2 / var, 0.0)
    return -0.5 * terms.flatten(1).sum(1)


def spectral_measurement(op: SVDOperator, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""A measurement in the operator's spectral space, float64: :math:`\bar y = (U^\top y) / s`
    on the observed coordinates (0 elsewhere), shape :math:`(B_y, *spectral)`; which
    coordinates are observed; and :math:`\lvert s \rvert` (1 where unobserved), so that a
    coordinate's noise level is :math:`\sigma_y / \lvert s \rvert` (MCGdiff, FPS)."""
    z = op.Ut(y.double())
    observed = op.observed().to(z.device).expand_as(z[0])
    s = op.singulars.to(z.device, torch.float64).expand_as(z[0]).where(observed, 1.0)
    return torch.where(observed, z / s, 0.0), observed, s.abs()
