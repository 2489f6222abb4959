r"""The measurements a sampler run carries, and what is checked about them.

A run's measurements live in its sampler (DDRM, MCGdiff, ...: ``op`` and ``y``), in the
terms of its guided denoiser (DPS, PiGDM, ...), in a denoiser wrapper (DDNM) or in its
projection (:class:`~guided.Replacement`). :func:`measurements` finds them all, so that
the sampler base class can check, with one mechanism for every method:

- **before the run**, that ``x_T`` has each operator's input shape (an operator built for
  8×8 images on a 16×16 prior is an error, not an 8×8 sample);
- **after the run**, the root-mean-square residual :math:`\lVert A(x_0) - y \rVert /
  \sqrt{m}` of each row. A diverged or unguided run ends far from its measurement; when a
  row's residual exceeds :math:`3 \sigma (1 + 2 / \sqrt{m}) + \tfrac12 s_y` (:math:`\sigma` the
  noise level, :math:`m` the measurement's size, :math:`s_y` the spread of the row's
  measurement, its standard deviation, or its magnitude when :math:`m = 1`) a
  :class:`DivergenceWarning` names the method, the residual and the noise level. Posterior
  samples sit near :math:`\sigma` (an exact sample of a noisy measurement has an expected
  squared residual between :math:`\sigma^2` and :math:`2 \sigma^2` per entry; the
  :math:`2 / \sqrt{m}` allows for the spread of an RMS over few entries), and a sample that
  ignores the measurement near :math:`\sqrt 2 s_y`.

The residual costs one operator call per row; it is computed for differentiable operators
only (a black box may be an expensive simulator, and its calls are what derivative-free
methods are measured by), and a run can skip it (``check_residual=False``).
"""

from __future__ import annotations

import math
import warnings

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from torch import Tensor

from operators import Operator
from priors import Denoiser, latent_of

__all__ = ["DivergenceWarning", "Measurement", "check_input_shapes", "measurements", "residuals"]


class DivergenceWarning(UserWarning):
    """A run ended far from its measurement (see the module)."""


@dataclass(frozen=True)
class Measurement:
    """One measurement of a run: who holds it, its operator, its value and noise level."""

    owner: str
    op: Operator
    y: Tensor
    noise: float | None  # the noise standard deviation (None: not known to the holder)


#: The attributes through which holders reach the parts that may carry measurements.
_PARTS = ("term", "replace", "prior", "denoiser")


def _noise(holder: Any) -> float | None:
    variance = getattr(holder, "variance", None)
    if callable(variance):  # Poisson terms know their measurement's variance
        return math.sqrt(float(variance().mean()))
    sigma_y = getattr(holder, "sigma_y", None)
    return float(sigma_y) if isinstance(sigma_y, int | float) else None


def measurements(*holders: Any) -> list[Measurement]:
    """Every measurement reachable from ``holders`` (samplers, denoisers, projections)."""
    found: list[Measurement] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if obj is None or id(obj) in seen:
            return
        seen.add(id(obj))
        op, y = getattr(obj, "op", None), getattr(obj, "y", None)
        if isinstance(op, Operator) and isinstance(y, Tensor):
            found.append(Measurement(type(obj).__name__, op, y, _noise(obj)))
        for name in _PARTS:
            visit(getattr(obj, name, None))
        terms = getattr(obj, "terms", None)
        if isinstance(terms, Iterable):
            for term in terms:
                visit(term)

    for holder in holders:
        visit(holder)
    return found


def check_input_shapes(
    x: Tensor, found: list[Measurement], name: str = "x_T", denoiser: Denoiser | None = None
) -> None:
    """Raises when a row of ``x`` is not the input shape of every measurement's operator;
    when ``denoiser`` is a latent prior and the operator measures its decoded images, the
    error says how to measure them from latents."""
    latent = None if denoiser is None else latent_of(denoiser)
    for m in found:
        if latent is not None and m.op.in_shape == latent.pixel_shape != latent.shape:
            raise ValueError(
                f"the operator of {m.owner} ({type(m.op).__name__}) measures images of shape "
                f"{m.op.in_shape}, but the prior is a priors.LatentPrior that samples latents of "
                f"shape {latent.shape}: use a latent method (guided.LatentDPS, guided.PSLD, "
                "guided.ReSample, guided.LatentDAPS), or measure the latents through the decoder "
                "with guided.Decoded(op, prior.autoencoder) (any method that needs only a "
                "differentiable operator then runs on the latents)"
            )
        if tuple(x.shape[1:]) != m.op.in_shape:
            raise ValueError(
                f"{name} has per-sample shape {tuple(x.shape[1:])}, but the operator of "
                f"{m.owner} ({type(m.op).__name__}) takes {m.op.in_shape}: the prior, x_T "
                "and the operator must describe the same signal"
            )


@torch.no_grad()
def residuals(x: Tensor, found: list[Measurement]) -> list[Tensor]:
    r"""The per-row RMS residual :math:`\lVert A(x) - y \rVert / \sqrt{m}` of each
    measurement (float64, shape :math:`(B,)`)."""
    out = []
    for m in found:
        r = (m.op(x).double() - m.y.to(x.device).double()).flatten(1)
        out.append(r.pow(2).mean(1).sqrt())
    return out


def warn_if_far(x: Tensor, found: list[Measurement], method: str) -> None:
    """Emits a :class:`DivergenceWarning` for a measurement whose residual is far above its
    noise level in some row (see the module); black-box operators are skipped."""
    checked = [m for m in found if m.op.differentiable]
    for m, rms in zip(checked, residuals(x, checked), strict=True):
        noise = m.noise or 0.0
        y = m.y.to(rms.device).double().flatten(1)
        size = y.shape[1]
        spread = y.std(1) if size > 1 else y.abs()[:, 0]  # per row of y (1 or B)
        limit = 3 * noise * (1 + 2 / math.sqrt(size)) + 0.5 * spread
        far = rms > limit
        if bool(far.any()):
            level = (
                f"a noise level of {noise:.3g}"
                if m.noise is not None
                else f"no noise level ({m.owner} is not given one; 0 assumed)"
            )
            warnings.warn(
                f"{method}: {int(far.sum())} of {rms.numel()} samples end far from the "
                f"measurement of {m.owner}: RMS residual up to {float(rms.max()):.3g} against "
                f"{level} (limit {float(limit.min()):.3g}). The run "
                "diverged or its "
                "guidance is too weak for this problem: check the step size and the scale.",
                DivergenceWarning,
                stacklevel=3,
            )
