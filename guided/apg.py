r"""Adaptive projected guidance (APG): classifier-free guidance with its update projected.

With the two passes of :class:`~guided.ClassifierFree`, :math:`\hat x_c` and
:math:`\hat x_\varnothing`, APG reshapes the update :math:`\Delta = \hat x_c -
\hat x_\varnothing` in three steps, per row (over all of a row's coordinates):

1. **Reverse momentum** :math:`\beta` (``momentum``; 0 is off, the paper uses negative
   values): :math:`\bar\Delta_k = \Delta_k + \beta \bar\Delta_{k-1}` over the run's
   evaluations, :math:`\bar\Delta_{-1} = 0`.
2. **Rescaling** to a norm of at most :math:`r` (``norm_threshold``; 0 is off):
   :math:`\bar\Delta \leftarrow \bar\Delta \min(1, r / \lVert \bar\Delta \rVert)`.
3. **Projection** on the conditional prediction: :math:`\bar\Delta_\parallel = (\langle
   \bar\Delta, \hat x_c \rangle / \lVert \hat x_c \rVert^2)\, \hat x_c` and
   :math:`\bar\Delta_\perp = \bar\Delta - \bar\Delta_\parallel`; the parallel part, which the
   paper finds causes over-saturation, is weighted by :math:`\eta` (``eta``):

.. math:: \tilde x = \hat x_c + (w - 1)\,(\bar\Delta_\perp + \eta \bar\Delta_\parallel).

``scale`` :math:`w` is :class:`~guided.ClassifierFree`'s (1: the conditional prediction).
With :math:`\eta = 1`, no momentum and no rescaling this is classifier-free guidance exactly.
The update acts on the denoised prediction :math:`\hat x` (our denoisers' output), where the
paper applies it. Two network evaluations per row, as classifier-free guidance; the
``rescale`` and ``interval`` options are :class:`~guided.ClassifierFree`'s.

**The momentum's run.** :math:`\bar\Delta` is carried from one call to the next of one run:
the wrapper starts a new average whenever a call's time is later than the previous call's
(a sampler walks time downwards, so that is a new run) or the batch's shape changes. A
sampler that calls the denoiser several times per step (Heun) updates it at every call.

**Departures from diffusers' ``AdaptiveProjectedGuidance``** (``src/diffusers/guiders/
adaptive_projected_guidance.py``): diffusers' default formulation returns
:math:`\hat x_\varnothing + w (\bar\Delta_\perp + \eta \bar\Delta_\parallel)`, which differs
from the form above by :math:`(1 - \eta) \bar\Delta_\parallel` whenever :math:`\eta \neq 1`;
ours is the form of its ``use_original_formulation`` branch (with :math:`w - 1` for its
scale). diffusers' defaults are :math:`\eta = 1`, :math:`r = 15`, no momentum; ours are
:math:`\eta = 0`, no rescaling and no momentum, and the digits sweep of the conditional app
measures the others.

References:
    | Eliminating Oversaturation and Artifacts of High Guidance Scales in Diffusion Models
    | (Sadat, Hilliges & Weber, 2024) https://arxiv.org/abs/2410.02416
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from torch import Tensor

import checks

from guided.cfg import ClassifierFree
from priors import Denoiser

__all__ = ["APG"]


class APG(ClassifierFree):
    r"""Adaptive projected guidance (see the module).

    Arguments:
        prior: A conditional denoiser.
        scale: The guidance scale :math:`w` (1: conditional, 0: unconditional).
        eta: :math:`\eta`, the weight of the update's part parallel to :math:`\hat x_c`.
        norm_threshold: :math:`r \geq 0`, the largest norm of a row's update (0: no
            rescaling).
        momentum: :math:`\beta \in (-1, 1)`, the reverse momentum (0: none).
        rescale: The CFG-rescale mix of :class:`~guided.ClassifierFree`.
        interval: :class:`~guided.ClassifierFree`'s guidance interval.
        key: The condition keyword (``label`` for our priors).
        null: The dropped value of ``key`` (default: label :math:`-1`).
    """

    def __init__(
        self,
        prior: Denoiser,
        scale: float,
        *,
        eta: float = 0.0,
        norm_threshold: float = 0.0,
        momentum: float = 0.0,
        rescale: float = 0.0,
        interval: tuple[float, float] | None = None,
        key: str = "label",
        null: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(prior, scale, rescale=rescale, interval=interval, key=key, null=null)
        self.eta = checks.number(eta, "eta")
        self.norm_threshold = checks.number(norm_threshold, "norm_threshold", low=0)
        self.momentum = checks.number(
            momentum, "momentum", low=-1, high=1, open_low=True, open_high=True
        )
        self._average: Tensor | None = None
        self._last: float | None = None

    def combine(
        self, x_t: Tensor, t: Tensor, conditional: Tensor, unconditional: Tensor
    ) -> Tensor:
        delta = conditional - unconditional
        if self.momentum != 0:
            delta = self._with_momentum(t, delta)
        dims = tuple(range(1, delta.ndim))
        if self.norm_threshold > 0:
            norm = torch.linalg.vector_norm(delta, dim=dims, keepdim=True)
            tiny = torch.finfo(delta.dtype).tiny
            delta = delta * (self.norm_threshold / norm.clamp(min=tiny)).clamp(max=1)
        along = conditional.to(torch.float64)
        squared = along.square().sum(dim=dims, keepdim=True)
        coefficient = (delta.to(torch.float64) * along).sum(
            dim=dims, keepdim=True
        ) / squared.clamp(min=torch.finfo(torch.float64).tiny)
        parallel = (coefficient * along).to(delta.dtype)
        update = delta - parallel + self.eta * parallel
        return conditional + (self.scale - 1) * update

    def _with_momentum(self, t: Tensor, delta: Tensor) -> Tensor:
        r""":math:`\bar\Delta_k = \Delta_k + \beta \bar\Delta_{k-1}`, restarted at a new run."""
        now = float(t.max())
        average = self._average
        fresh = (
            average is None
            or self._last is None
            or now > self._last
            or average.shape != delta.shape
            or average.dtype != delta.dtype
            or average.device != delta.device
        )
        delta = delta if fresh else delta + self.momentum * average
        self._average, self._last = delta.detach(), now
        return delta
