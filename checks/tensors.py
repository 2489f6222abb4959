r"""Tensors given as arguments: one dtype policy (see the package).

:func:`real_tensor` accepts real floating tensors (float64 and float32; float16 and
bfloat16 where the caller says the operation supports them) and refuses integer, boolean
and complex tensors and tensors on the ``meta`` device with an error naming the argument;
:func:`finite` refuses NaN and infinities; :func:`all_finite` is the cheap test the sampling
loop's hot path uses.

:func:`all_finite` answers ``torch.isfinite(x).all()`` with one reduction in the common
case: a sum over finite values is finite unless it overflows, and any NaN or infinity makes it
NaN or infinite, so a finite sum proves every entry finite; only a non-finite sum (a NaN or
Inf somewhere, or an overflow of huge finite values) pays for the exact check. A sampler
calls such checks several times per step, where ``isfinite`` (four elementwise kernels and a
reduction) costs as much as a small network layer.
"""

from __future__ import annotations

import cmath

from typing import Any

import torch

from torch import Tensor

__all__ = ["all_finite", "finite", "real_tensor"]

FULL = (torch.float64, torch.float32)
HALF = (torch.float16, torch.bfloat16)


try:  # torch's own query (no public one exists); without it, no tensor counts as wrapped
    from torch._C._functorch import is_functorch_wrapped_tensor as _wrapped
except ImportError:  # pragma: no cover

    def _wrapped(x: Tensor) -> bool:
        return False


def _transformed(x: Tensor) -> bool:
    """Whether ``x`` lives inside a ``torch.func`` transform (vmap, grad, jacrev), where its
    values cannot be read: checks of values are skipped there."""
    return bool(_wrapped(x))


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite (exactly ``torch.isfinite(x).all()``; True
    inside ``torch.func`` transforms, where values cannot be read)."""
    if not x.numel():
        return True
    if not x.is_floating_point() and not x.is_complex():
        return True  # integers and booleans are always finite
    if _transformed(x):
        return True
    if cmath.isfinite((x.detach() if x.requires_grad else x).sum().item()):
        return True
    return bool(torch.isfinite(x).all())


def real_tensor(x: Any, name: str, *, half: bool = True) -> Tensor:
    """Refuses anything but a real floating tensor with values (see the module).

    Arguments:
        x: The argument.
        name: Its name, for the error message.
        half: Whether float16 and bfloat16 are supported by the caller.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    accepted = FULL + HALF if half else FULL
    if x.dtype not in accepted:
        names = ", ".join(str(d).removeprefix("torch.") for d in accepted)
        raise TypeError(f"{name} must be a real floating tensor ({names}), got {x.dtype}")
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (it has no values)")
    return x


def finite(x: Tensor, name: str, error: type[Exception] = ValueError) -> Tensor:
    """Refuses a tensor with a NaN or an infinity, counting each (``error`` is raised:
    ``ValueError`` for an argument, ``FloatingPointError`` for a computed result)."""
    if not all_finite(x):
        nan = int(torch.isnan(x).sum())
        inf = int(torch.isinf(x).sum())
        raise error(f"{name} contains NaN or Inf ({nan} NaN, {inf} infinite of {x.numel()})")
    return x
