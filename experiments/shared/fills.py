r"""The classical fills every iterative baseline starts from: the pseudo-inverse, bicubic
upsampling (super-resolution) and piecewise-linear interpolation of missing pixels
(inpainting), in our units (images in [-1, 1]). See :mod:`experiments.shared.baselines`."""

from __future__ import annotations

import numpy as np
import torch

from torch import Tensor

import operators

__all__ = ["initial", "interpolate", "interpolates", "pinv"]


def interpolates(op: operators.Operator) -> bool:
    """Whether :func:`interpolate` takes the operator."""
    return isinstance(op, operators.AveragePoolSR | operators.Inpainting)


def pinv(op: operators.Operator, y: Tensor, sigma_y: float) -> Tensor:
    """The pseudo-inverse, clamped to the image range."""
    if not isinstance(op, operators.LinearOperator):
        raise operators.UnsupportedOperator("the pseudo-inverse needs a linear operator")
    return op.pinv(y).clamp(-1, 1)


def _linear_fill(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    from scipy.interpolate import griddata

    h, w = image.shape
    points = np.argwhere(known)
    grid = np.mgrid[0:h, 0:w].reshape(2, -1).T
    values = image[known]
    filled = griddata(points, values, grid, method="linear").reshape(h, w)
    outside = np.isnan(filled)
    if outside.any():
        filled[outside] = griddata(points, values, grid[outside.ravel()], method="nearest")
    return filled


def interpolate(op: operators.Operator, y: Tensor, sigma_y: float) -> Tensor:
    """Bicubic upsampling (super-resolution) or linear interpolation (inpainting)."""
    if isinstance(op, operators.AveragePoolSR):
        return torch.nn.functional.interpolate(
            y, scale_factor=op.factor, mode="bicubic", align_corners=False
        ).clamp(-1, 1)
    if isinstance(op, operators.Inpainting):
        x = op.adjoint(y).double()
        known = op.mask.expand(op.in_shape).bool().numpy()
        out = np.empty(x.shape)
        for b in range(x.shape[0]):
            for c in range(x.shape[1]):
                out[b, c] = _linear_fill(x[b, c].numpy(), known[c])
        return torch.from_numpy(out).to(y.dtype).clamp(-1, 1)
    raise operators.UnsupportedOperator(
        "interpolation needs super-resolution (AveragePoolSR) or inpainting (Inpainting)"
    )


def initial(op: operators.Operator, y: Tensor, sigma_y: float) -> Tensor:
    """Where the iterative baselines start: the classical fill where there is one, else
    :math:`A^\top y` (deepinv's start), clamped to the image range. Never the
    pseudo-inverse: it divides the noise by the smallest singular values (on the Gaussian
    blur task, at sigma_y = 0.01, :math:`A^+ y` scores about 5 dB, the blurred image 36 dB),
    and no iterative baseline recovers from that start."""
    if interpolates(op):
        return interpolate(op, y, sigma_y)
    if not isinstance(op, operators.LinearOperator):
        raise operators.UnsupportedOperator("the iterative baselines need a linear operator")
    return op.adjoint(y).clamp(-1, 1)
