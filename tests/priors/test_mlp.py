"""The vector MLP denoiser: the zero-initialised output, shapes, and that its loss trains it
towards the exact denoiser of a Gaussian mixture."""

import pytest
import torch

import priors

F64 = torch.float64


def test_untrained_denoiser_is_the_unit_variance_limit_and_checks_shapes():
    torch.manual_seed(0)
    den = priors.MLPDenoiser(priors.MLP(3, width=16, blocks=2), priors.LinearSchedule())
    x_t = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(0.3)
    alpha_t, _ = den.schedule(t)
    torch.testing.assert_close(den(x_t, t), float(alpha_t) * x_t)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        den(torch.zeros(4, 2), t)
    with pytest.raises(ValueError, match="width"):
        priors.MLP(3, width=0)


def test_training_on_its_loss_approaches_the_exact_denoiser():
    mixture = priors.GaussianMixture(
        torch.tensor([0.5, 0.5], dtype=F64),
        torch.tensor([[-1.5, 0.5], [1.5, -0.5]], dtype=F64),
        0.1 * torch.eye(2, dtype=F64).expand(2, 2, 2),
        priors.LinearSchedule(),
    )
    torch.manual_seed(0)
    den = priors.MLPDenoiser(priors.MLP(2, width=64, blocks=2), mixture.schedule)
    g = torch.Generator().manual_seed(2)
    data = mixture.sample(4096, g).float()
    optimiser = torch.optim.Adam(den.parameters(), lr=3e-3)
    x_t = torch.randn(512, 2, generator=g)
    t = torch.tensor(0.4)

    def error() -> float:
        with torch.no_grad():
            return float((den(x_t, t).double() - mixture(x_t.double(), t)).square().mean())

    before = error()
    for _ in range(600):
        batch = data[torch.randint(0, len(data), (256,), generator=g)]
        optimiser.zero_grad()
        den.loss(batch, g).backward()
        optimiser.step()
    assert error() < 0.1 * before, (error(), before)
