r"""Cheap input checks for the sampling loop's hot path.

:func:`all_finite` answers ``torch.isfinite(x).all()`` with one reduction in the common
case: a sum over finite values is finite unless it overflows, and any NaN or infinity
makes it NaN or infinite, so a finite sum proves every entry finite; only a non-finite sum
(a NaN or Inf somewhere, or an overflow of huge finite values) pays for the exact check.
A sampler calls such checks several times per step, where ``isfinite`` (four elementwise
kernels and a reduction) costs as much as a small network layer.
"""

from __future__ import annotations

import cmath

import torch

from torch import Tensor

__all__ = ["all_finite"]


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite (exactly ``torch.isfinite(x).all()``)."""
    if not x.numel():
        return True
    if not x.is_floating_point() and not x.is_complex():
        return True  # integers and booleans are always finite
    if cmath.isfinite((x.detach() if x.requires_grad else x).sum().item()):
        return True
    return bool(torch.isfinite(x).all())
