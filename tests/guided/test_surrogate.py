"""Surrogate-likelihood guidance (CoGuide): a contrastive critic trained on simulated pairs
learns the likelihood score, and guiding with it matches DPS with the true likelihood."""

import pytest
import torch

import guided
import operators
import priors

SIGMA = 0.5


@pytest.fixture(scope="module")
def critic():
    """A critic trained on y = x + 0.5 n, x ~ N(0, I_2) (1.5 s on 2 cores)."""
    torch.manual_seed(0)  # the encoders' initialisation
    g = torch.Generator().manual_seed(0)
    model = priors.ContrastiveLikelihood((2,), (2,), features=16, width=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(600):
        x = torch.randn(256, 2, generator=g)
        y = x + SIGMA * torch.randn(256, 2, generator=g)
        optimiser.zero_grad()
        model.loss(x, y).backward()
        optimiser.step()
    return model.requires_grad_(False)


def _prior():
    return priors.GaussianMixture(
        torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None], priors.CosineSchedule()
    )


def test_the_critic_gradient_is_the_likelihood_score(critic):
    """grad_x s(x, y) ~ grad_x log p(y | x) = (y - x) / sigma^2 at points off the data."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 2, generator=g)
    y = x + SIGMA * torch.randn(512, 2, generator=g)
    query = torch.randn(512, 2, generator=g).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(query, y).sum(), query)
    true = (y - query.detach()) / SIGMA**2
    cosine = torch.nn.functional.cosine_similarity(grad, true)
    ratio = grad.norm(dim=1) / true.norm(dim=1)
    assert float(cosine.median()) > 0.98
    assert 0.6 < float(ratio.median()) < 1.4


def test_guidance_with_the_critic_matches_dps_with_the_true_likelihood(critic):
    """Same prior, sampler and noise: the surrogate's samples have DPS's mean and spread, and
    both sit far from the prior's (0, 1)."""
    prior, y = _prior(), torch.tensor([1.5, -1.0])
    x_T = guided.initial_noise(prior.schedule, (2000, 2), torch.Generator().manual_seed(1))
    ts = guided.time_grid(100)

    def sample(term):
        gen = torch.Generator().manual_seed(2)
        return guided.DDPM()(guided.GuidedDenoiser(prior, term), x_T, ts, generator=gen)

    ours = sample(guided.SurrogateLikelihood(critic, y, scale=1.0))
    dps = sample(guided.DPS(operators.MatrixOperator(torch.eye(2)), y, SIGMA))
    assert float((ours.mean(0) - dps.mean(0)).abs().max()) < 0.1
    assert float((ours.std(0) - dps.std(0)).abs().max()) < 0.05
    assert float((ours.mean(0) - y).norm()) < 0.3


def test_the_term_is_the_critic_gradient_through_the_network(critic):
    prior, y = _prior(), torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    x_t, t = torch.tensor([[0.3, 0.1], [-0.2, 0.5]]), torch.tensor(0.4)
    guided_hat = guided.GuidedDenoiser(prior, guided.SurrogateLikelihood(critic, y, 2.0))(x_t, t)
    x = x_t.clone().requires_grad_(True)
    score = critic(prior(x, t), y).sum()
    (g,) = torch.autograd.grad(2.0 * score, x)
    alpha_t, sigma_t = prior.schedule(t)
    torch.testing.assert_close(guided_hat, prior(x_t, t) + sigma_t**2 / alpha_t * g)
    zero = guided.GuidedDenoiser(prior, guided.SurrogateLikelihood(critic, y, 0.0))(x_t, t)
    torch.testing.assert_close(zero, prior(x_t, t))


def test_infonce_is_invariant_to_the_order_of_the_pairs(critic):
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    order = torch.randperm(8, generator=g)
    torch.testing.assert_close(critic.loss(x, y), critic.loss(x[order], y[order]))
    assert float(critic.loss(x, y)) != pytest.approx(float(critic.loss(x, y[order])))


def test_the_encoders_take_images_and_vectors():
    model = priors.ContrastiveLikelihood((1, 16, 16), (32,), features=8, width=4)
    x, y = torch.randn(3, 1, 16, 16), torch.randn(3, 32)
    assert model(x, y).shape == (3,)
    torch.testing.assert_close(model.embed_x(x).norm(dim=1), torch.ones(3))
    assert model.logits(x, y).shape == (3, 3)


def test_bad_input_is_refused(critic):
    with pytest.raises(ValueError, match="shapes"):
        priors.Encoder((4, 4))
    with pytest.raises(ValueError, match="temperature"):
        priors.ContrastiveLikelihood((2,), (2,), temperature=5.0)
    with pytest.raises(ValueError, match="at least 2"):
        critic.loss(torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="inputs"):
        critic(torch.zeros(3, 3), torch.zeros(3, 2))
    with pytest.raises(TypeError, match="ContrastiveLikelihood"):
        guided.SurrogateLikelihood(torch.nn.Linear(2, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        guided.SurrogateLikelihood(critic, torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        guided.SurrogateLikelihood(critic, torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match="scale"):
        guided.SurrogateLikelihood(critic, torch.zeros(2), scale=-1.0)
    term = guided.SurrogateLikelihood(critic, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="rows"):
        guided.GuidedDenoiser(_prior(), term)(torch.zeros(3, 2), torch.tensor(0.5))
