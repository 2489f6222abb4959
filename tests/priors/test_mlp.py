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


def test_a_condition_steers_the_denoiser_and_a_dropped_one_gives_the_marginal():
    """Data x = c + 0.1 n with c in {-1, +1} given as a condition: trained with dropout, the
    conditional denoiser at large t already returns about c, and the null condition about the
    mixture's posterior mean."""
    torch.manual_seed(0)
    net = priors.MLP(1, width=64, blocks=2, conditions={"c": 1}, optional=["c"])
    den = priors.MLPDenoiser(net, priors.CosineSchedule())
    g = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(den.parameters(), lr=3e-3)
    for _ in range(800):
        c = torch.randint(0, 2, (256, 1), generator=g).float() * 2 - 1
        x = c + 0.1 * torch.randn(256, 1, generator=g)
        optimiser.zero_grad()
        den.loss(x, g, dropout=0.3, c=c).backward()
        optimiser.step()
    t, x_t = torch.tensor(0.9), torch.zeros(2, 1)
    with torch.no_grad():
        given = den(x_t, t, c=torch.tensor([[-1.0], [1.0]]))
        dropped = den(x_t, t, c=torch.full((2, 1), float("nan")))
        missing = den(x_t, t)
    assert float(given[0]) < -0.7 and float(given[1]) > 0.7
    assert float(dropped.abs().max()) < 0.3  # the two modes balance at x_t = 0
    torch.testing.assert_close(dropped, missing)


def test_conditions_are_checked():
    net = priors.MLP(2, width=8, blocks=1, conditions={"state": 3, "ret": 1}, optional=["ret"])
    den = priors.MLPDenoiser(net, priors.LinearSchedule())
    x_t, t = torch.zeros(4, 2), torch.tensor(0.5)
    assert den(x_t, t, state=torch.zeros(4, 3)).shape == (4, 2)
    assert den(x_t, t, state=torch.zeros(3)).shape == (4, 2)  # one state for all rows
    with pytest.raises(ValueError, match="'state' is required"):
        den(x_t, t)
    with pytest.raises(ValueError, match=r"shape \(4, 3\)"):
        den(x_t, t, state=torch.zeros(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        den(x_t, t, state=torch.full((4, 3), float("nan")))
    with pytest.raises(ValueError, match="unknown condition"):
        den(x_t, t, state=torch.zeros(4, 3), label=torch.zeros(4, 1))
    with pytest.raises(ValueError, match="optional"):
        priors.MLP(2, conditions={"state": 3}, optional=["ret"])
    with pytest.raises(ValueError, match="dropout"):
        den.loss(torch.zeros(4, 2), dropout=1.0, state=torch.zeros(4, 3))
    assert den.conditions == {"state": 3, "ret": 1}


def test_one_time_for_all_rows_equals_the_time_per_row():
    torch.manual_seed(0)
    net = priors.MLP(2, width=16, blocks=2, conditions={"state": 3, "ret": 1}, optional=["ret"])
    for p in net.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    x, state = torch.randn(5, 2), torch.randn(5, 3)
    ret = torch.tensor([[0.5], [float("nan")], [1.0], [0.0], [float("nan")]])
    t = torch.tensor(0.3)
    torch.testing.assert_close(
        net(x, t, state=state, ret=ret), net(x, t.expand(5), state=state, ret=ret)
    )
    critic = priors.Critic(3, 2, width=16, schedule=priors.CosineSchedule())
    torch.testing.assert_close(critic(state, x, 0.3), critic(state, x, torch.full((5,), 0.3)))
