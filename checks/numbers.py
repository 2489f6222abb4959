r"""Numbers given as arguments: one policy (see the package).

:func:`number` returns a Python ``float`` within a stated range, :func:`integer` a Python
``int``, :func:`flag` a ``bool``, :func:`interval` a pair of floats ``lo < hi``; each raises a
``TypeError`` for a value of the wrong kind (a string, a bool where a number is meant, a
complex number, a tensor with more than one element, anything but a pair for a range) and a
``ValueError`` for a value out of range (NaN and infinities included), and both messages name
the argument, the accepted kind and range, and the value received.
"""

from __future__ import annotations

import math
import numbers

from typing import Any

import numpy as np
import torch

__all__ = ["flag", "integer", "interval", "number"]


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _range(low: float | None, high: float | None, open_low: bool, open_high: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    if low is not None:
        return f" {'>' if open_low else '>='} {low:g}"
    if high is not None:
        return f" {'<' if open_high else '<='} {high:g}"
    return ""


def _real(value: Any, name: str, kind: str, accepted: str) -> float | int:
    """The Python number inside ``value`` (numbers, NumPy scalars, one-element tensors)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(
                f"{name} must be {kind}{accepted}, got a tensor of shape "
                f"{tuple(value.shape)} and dtype {value.dtype}"
            )
        if value.device.type == "meta":
            raise TypeError(f"{name} must be {kind}{accepted}, got a tensor on the meta device")
        if value.requires_grad:
            raise TypeError(
                f"{name} must be {kind}{accepted}, got a tensor that requires a gradient "
                "(its gradient would be lost): pass a number"
            )
        return value.item()
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {kind}{accepted}, got {_describe(value)}")
    return value


def number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    infinite: bool = False,
) -> float:
    """A real number in the range ``[low, high]`` (ends open where asked), as a ``float``.

    Arguments:
        value: An ``int``, ``float``, NumPy scalar or one-element real tensor without a
            gradient.
        name: The argument's name, for the error message.
        low: The smallest accepted value (None: no bound).
        high: The largest accepted value (None: no bound).
        open_low: Whether ``low`` itself is refused.
        open_high: Whether ``high`` itself is refused.
        infinite: Whether ``+inf`` (and ``-inf``) are accepted where the range allows.
    """
    accepted = _range(low, high, open_low, open_high)
    kind = "a number" if infinite else "a finite number"
    x = float(_real(value, name, kind, accepted))
    if math.isnan(x) or (math.isinf(x) and not infinite):
        raise ValueError(f"{name} must be {kind}{accepted}, got {x!r}")
    below = low is not None and (x < low or (open_low and x == low))
    above = high is not None and (x > high or (open_high and x == high))
    if below or above:
        raise ValueError(f"{name} must be {kind}{accepted}, got {x!r}")
    return x


def interval(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    infinite: bool = False,
) -> tuple[float, float]:
    """A range ``(lo, hi)`` with ``lo < hi``, both ends numbers (:func:`number`) in
    ``[low, high]`` (``infinite``: as :func:`number`'s), as a pair of ``float``. Anything but a
    pair (a string, a number, a sequence of another length) is a ``TypeError``; an end out of
    range or ``lo >= hi`` a ``ValueError``."""
    if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"{name} must be a pair (lo, hi) of numbers, got {_describe(value)}")
    lo = number(value[0], f"{name}[0]", low=low, high=high, infinite=infinite)
    hi = number(value[1], f"{name}[1]", low=low, high=high, infinite=infinite)
    if not lo < hi:
        raise ValueError(f"{name} must be a range (lo, hi) with lo < hi, got ({lo:g}, {hi:g})")
    return lo, hi


def integer(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer in ``[low, high]``, as an ``int``; an integral float (``2.0``) is accepted,
    a fractional one (``2.5``) is refused rather than truncated."""
    accepted = _range(low, high, False, False)
    x = _real(value, name, "an integer", accepted)
    if isinstance(x, float | np.floating) and (not math.isfinite(x) or x != int(x)):
        raise ValueError(f"{name} must be an integer{accepted}, got {x!r}")
    x = int(x)
    if (low is not None and x < low) or (high is not None and x > high):
        raise ValueError(f"{name} must be an integer{accepted}, got {x}")
    return x


def flag(value: Any, name: str) -> bool:
    """A ``bool`` (or NumPy ``bool_``); numbers and strings are refused (``"False"`` is a
    true string)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {_describe(value)}")
    return bool(value)
