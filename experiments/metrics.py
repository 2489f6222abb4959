r"""Sample-based metrics for experiments and tests.

Sliced Wasserstein distance between two empirical distributions with :math:`n` points each
in :math:`\mathbb{R}^D`, over unit directions :math:`\theta_1, \dots, \theta_L`:

.. math:: SW_1 = \frac{1}{L} \sum_l W_1(\theta_l^\top X, \theta_l^\top Y), \qquad
    W_1(a, b) = \frac{1}{n} \sum_i |a_{(i)} - b_{(i)}|,

with :math:`a_{(i)}` the sorted projections; the max-sliced variant takes the largest
slice instead of the mean (both as in Cardoso et al., 2024, with 100 directions).

References:
    | Monte Carlo guided Diffusion for Bayesian linear inverse problems
    | (Cardoso et al., 2024) https://arxiv.org/abs/2308.07983
"""

from __future__ import annotations

import torch

from torch import Tensor

__all__ = ["max_sliced_wasserstein", "random_directions", "slice_distances", "sliced_wasserstein"]


def random_directions(
    dim: int, count: int = 100, generator: torch.Generator | None = None
) -> Tensor:
    """``count`` directions drawn uniformly on the unit sphere of R^dim, shape (count, dim)."""
    if dim < 1 or count < 1:
        raise ValueError(f"dim and count must be >= 1, got {dim} and {count}")
    theta = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    return theta / theta.norm(dim=1, keepdim=True)


def slice_distances(x: Tensor, y: Tensor, directions: Tensor, p: int = 1) -> Tensor:
    """W_p distance of the projections of ``x`` and ``y`` on each direction, shape (L,)
    (equal sample sizes: the sorted projections are matched)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have shapes (n, D) with the same D, got {tuple(x.shape)}, "
            f"{tuple(y.shape)}"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold as many points, got {x.shape[0]} and {y.shape[0]}")
    if directions.ndim != 2 or directions.shape[1] != x.shape[1]:
        raise ValueError(f"directions must have shape (L, {x.shape[1]})")
    for name, value in (("x", x), ("y", y)):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} contains NaN or Inf")
    d = directions.to(torch.float64)
    px = (x.to(torch.float64) @ d.T).sort(dim=0).values
    py = (y.to(torch.float64) @ d.T).sort(dim=0).values
    if p == 1:
        return (px - py).abs().mean(dim=0)
    return (px - py).abs().pow(p).mean(dim=0).pow(1 / p)


def sliced_wasserstein(x: Tensor, y: Tensor, directions: Tensor) -> float:
    """Mean over directions of the sliced W1 distance."""
    return float(slice_distances(x, y, directions).mean())


def max_sliced_wasserstein(x: Tensor, y: Tensor, directions: Tensor) -> float:
    """Largest sliced W1 distance over the directions."""
    return float(slice_distances(x, y, directions).max())
