r"""Distances between two sets of samples: how far a sampler is from exact draws.

Sliced Wasserstein distance between two empirical distributions with :math:`n` points each
in :math:`\mathbb{R}^D`, over unit directions :math:`\theta_1, \dots, \theta_L`:

.. math:: SW_1 = \frac{1}{L} \sum_l W_1(\theta_l^\top X, \theta_l^\top Y), \qquad
    W_1(a, b) = \frac{1}{n} \sum_i |a_{(i)} - b_{(i)}|,

with :math:`a_{(i)}` the sorted projections; the max-sliced variant takes the largest
slice instead of the mean (both as in Cardoso et al., 2024, with 100 directions).

The Fréchet distance between Gaussians fitted to two feature sets (the FID of Heusel et al.,
2017, in whatever feature space is given: here a clean classifier's pooled features),

.. math:: FD = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{tr}\bigl(\Sigma_1 + \Sigma_2
    - 2 (\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2})^{1/2}\bigr),

is computed from symmetric eigendecompositions in float64 (no complex ``sqrtm``).

References:
    | Monte Carlo guided Diffusion for Bayesian linear inverse problems
    | (Cardoso et al., 2024) https://arxiv.org/abs/2308.07983
    | GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium
    | (Heusel et al., 2017) https://arxiv.org/abs/1706.08500
"""

from __future__ import annotations

import torch

from torch import Tensor

__all__ = [
    "frechet_distance",
    "max_sliced_wasserstein",
    "random_directions",
    "slice_distances",
    "sliced_wasserstein",
]


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


def _psd_sqrt(a: Tensor) -> Tensor:
    lam, q = torch.linalg.eigh((a + a.T) / 2)
    return (q * lam.clamp(min=0).sqrt()) @ q.T


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """Fréchet distance between Gaussian fits of features ``x`` (n, F) and ``y`` (m, F)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"features must have shapes (n, F) with the same F, got {tuple(x.shape)}, "
            f"{tuple(y.shape)}"
        )
    if min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("each feature set needs at least 2 points")
    for name, value in (("x", x), ("y", y)):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} contains NaN or Inf")
    x, y = x.to(torch.float64), y.to(torch.float64)
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)
    root = _psd_sqrt(cov_x)
    cross = torch.linalg.eigvalsh(root @ cov_y @ root).clamp(min=0).sqrt().sum()
    return float((mu_x - mu_y).square().sum() + cov_x.trace() + cov_y.trace() - 2 * cross)
