import pytest
import torch

import priors

torch.set_num_threads(2)

SCHEDULES = {
    "linear": priors.LinearSchedule,
    "cosine": priors.CosineSchedule,
    "edm": priors.EDMSchedule,
}


@pytest.fixture(params=sorted(SCHEDULES))
def schedule(request):
    return SCHEDULES[request.param]()


def well_separated_mixture(
    dim: int, schedule: priors.Schedule, seed: int = 0
) -> priors.GaussianMixture:
    """Unequal weights, anisotropic covariances, modes at least ~8 standard deviations apart."""
    g = torch.Generator().manual_seed(seed)
    if dim == 2:
        means = torch.tensor([[-4.0, -4.0], [4.0, -4.0], [-4.0, 4.0], [4.0, 4.0], [0.0, 0.0]])
    else:
        means = 6.0 * torch.eye(dim, dtype=torch.float64)[:5] - 3.0
    k = means.shape[0]
    weights = torch.tensor([0.05, 0.1, 0.2, 0.25, 0.4])[:k]
    q, _ = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=torch.float64))
    eig = 0.05 + 0.25 * torch.rand(k, dim, generator=g, dtype=torch.float64)
    covs = q @ torch.diag_embed(eig) @ q.mT
    return priors.GaussianMixture(weights, means.double(), covs, schedule)
