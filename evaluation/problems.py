"""Test problems whose answer is known exactly.

:func:`well_separated_mixture` is the prior of the sampler tests and of
``experiments.benchmarks.sampler_accuracy``: a Gaussian mixture whose exact posterior mean
(:class:`priors.GaussianMixture`) makes every sampler's error measurable.
"""

from __future__ import annotations

import torch

import priors

__all__ = ["well_separated_mixture"]


def well_separated_mixture(
    dim: int, schedule: priors.Schedule, seed: int = 0
) -> priors.GaussianMixture:
    """Five components with unequal weights and random anisotropic covariances (eigenvalues in
    [0.05, 0.3]) whose means are > 10 component standard deviations apart, in 2 or more
    dimensions: the test prior of the sampler tests."""
    g = torch.Generator().manual_seed(seed)
    if dim == 2:
        means = torch.tensor([[-4.0, -4.0], [4.0, -4.0], [-4.0, 4.0], [4.0, 4.0], [0.0, 0.0]])
    elif dim >= 5:
        means = 6.0 * torch.eye(dim)[:5] - 3.0
    else:
        raise ValueError(f"dim must be 2 or >= 5, got {dim}")
    weights = torch.tensor([0.05, 0.1, 0.2, 0.25, 0.4])
    q, _ = torch.linalg.qr(torch.randn(5, dim, dim, generator=g, dtype=torch.float64))
    eig = 0.05 + 0.25 * torch.rand(5, dim, generator=g, dtype=torch.float64)
    covs = q @ torch.diag_embed(eig) @ q.mT
    return priors.GaussianMixture(weights, means.double(), covs, schedule)
