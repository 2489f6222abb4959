"""Argument checks shared by every package: one policy for numbers and tensors.

``priors``, ``operators`` and ``guided`` validate what a user passes through these functions
and nowhere else, so that the same bad input gets the same kind of error everywhere:

- **Numbers** (:func:`number`, :func:`integer`): Python ``int`` and ``float`` and NumPy
  scalars of either kind are accepted; ``bool``, strings, complex numbers, NaN and
  infinities are refused with an error that names the argument and the accepted range. An
  integer argument accepts an integral float (``2.0``) and refuses ``2.5``; a range
  (:func:`interval`) is a pair of such numbers ``lo < hi``.
- **Tensors** (:func:`real_tensor`, :func:`finite`): real floating dtypes only (float64,
  float32, and float16 / bfloat16 where the caller allows them); integer, boolean and
  complex tensors are refused unless a class declares support; tensors on the ``meta``
  device (no values) are refused.

This package imports only torch and numpy; it never imports the others.
"""

from checks.numbers import flag, integer, interval, number
from checks.tensors import all_finite, finite, real_tensor

__all__ = ["all_finite", "finite", "flag", "integer", "interval", "number", "real_tensor"]
