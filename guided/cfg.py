r"""Classifier-free guidance as a denoiser wrapper.

With a network trained with condition dropout, the guided prediction extrapolates from the
unconditional towards the conditional one,

.. math::
    \tilde x(x_t, c) = \hat x(x_t, \varnothing)
    + w \,(\hat x(x_t, c) - \hat x(x_t, \varnothing)),

which is the same combination of noise predictions (they are affine in :math:`\hat x` with
coefficients independent of the condition). ``scale`` :math:`w` follows diffusers'
convention: :math:`w = 1` is the plain conditional prediction, :math:`w = 0` the
unconditional one; the paper's :math:`w_{\text{paper}}` is :math:`w - 1`. Both passes run
as one batched call of the wrapped denoiser (2 network evaluations per row; 1 at
:math:`w = 1`).

References:
    | Classifier-Free Diffusion Guidance (Ho & Salimans, 2022) https://arxiv.org/abs/2207.12598
"""

from __future__ import annotations

import math

from typing import Any, ClassVar

import torch

from torch import Tensor

from priors import Denoiser

__all__ = ["ClassifierFree"]


class ClassifierFree(Denoiser):
    r"""Classifier-free guidance of a class-conditional prior.

    Arguments:
        prior: A denoiser taking ``label`` (negative = unconditional), e.g. a shipped prior.
        scale: The guidance scale :math:`w` (1: conditional, 0: unconditional).
    """

    counts_evaluations: ClassVar[bool] = False

    def __init__(self, prior: Denoiser, scale: float) -> None:
        if not getattr(prior, "num_classes", 0):
            raise ValueError("classifier-free guidance needs a class-conditional prior")
        if not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"scale must be a number, got {scale!r}")
        super().__init__(prior.schedule)
        self.prior = prior
        self.scale = float(scale)
        self.shape = getattr(prior, "shape", None)
        self.num_classes = prior.num_classes

    def forward(
        self, x_t: Tensor, t: Tensor, label: Tensor | int | None = None, **cond: Any
    ) -> Tensor:
        if label is None:
            raise ValueError("classifier-free guidance needs a label (the condition is missing)")
        b = x_t.shape[0]
        label = torch.as_tensor(label, device=x_t.device)
        label = label.expand(b) if label.ndim == 0 else label
        t = t.expand(b) if t.ndim == 0 else t
        if self.scale == 1:  # the plain conditional prediction: one pass
            return self.prior(x_t, t, label=label, **cond)
        both = self.prior(
            torch.cat([x_t, x_t]),
            torch.cat([t, t]),
            label=torch.cat([label, torch.full_like(label, -1)]),
            **cond,
        )
        conditional, unconditional = both[:b], both[b:]
        return unconditional + self.scale * (conditional - unconditional)
