"""Value guidance samples mu(a) exp(beta Q(a)): exact for a Gaussian prior and a linear Q
(the tilted Gaussian N(m + beta Sigma w, Sigma)), through the denoised action and with a
noise-aware critic; the critic's shapes and kind are checked."""

import pytest
import torch

import guided
import priors

F64 = torch.float64
MEAN = torch.tensor([0.3, -0.2], dtype=F64)
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=F64)
W = torch.tensor([1.0, -2.0], dtype=F64)


def _prior():
    return priors.GaussianMixture(
        torch.ones(1, dtype=F64), MEAN[None], COV[None], priors.CosineSchedule()
    )


class LinearCritic(priors.Critic):
    """Q(s, a) = w^T a (the state is ignored)."""

    def __init__(self):
        super().__init__(1, 2)

    def forward(self, state, action=None, t=None):
        self.check(state, action)
        return action @ W


class NoisyLinearCritic(priors.Critic):
    """The exact noise-aware critic of a linear Q under the prior: w^T E[a | a_t]."""

    def __init__(self, prior):
        super().__init__(1, 2, schedule=prior.schedule)
        self.prior = prior

    def forward(self, state, action=None, t=None):
        self.check(state, action)
        return self.prior(action, t) @ W


@pytest.mark.parametrize("noisy", [False, True])
def test_linear_value_guidance_samples_the_tilted_gaussian(noisy):
    prior, beta = _prior(), 2.0
    state = torch.zeros(1)
    term = (
        guided.NoisyValueGuidance(NoisyLinearCritic(prior), state, beta)
        if noisy
        else guided.ValueGuidance(LinearCritic(), state, beta)
    )
    x_T = guided.initial_noise(
        prior.schedule, (4000, 2), torch.Generator().manual_seed(0)
    ).double()
    x = guided.DDPM()(
        guided.GuidedDenoiser(prior, term),
        x_T,
        guided.time_grid(200),
        generator=torch.Generator().manual_seed(1),
    )
    target = MEAN + beta * COV @ W
    assert float((x.mean(0) - target).abs().max()) < 0.05, (x.mean(0), target)
    assert float((torch.cov(x.T) - COV).abs().max()) < 0.05
    unguided = MEAN
    assert float((target - unguided).norm()) > 0.3  # the test can tell guided from not


def test_noisy_guidance_takes_no_vjp_and_clean_guidance_one():
    prior, state = _prior(), torch.zeros(3, 1)
    x_t, t = torch.randn(3, 2, dtype=F64), torch.tensor(0.5)
    for term, vjp in (
        (guided.ValueGuidance(LinearCritic(), state), 3),
        (guided.NoisyValueGuidance(NoisyLinearCritic(prior), state), 0),
    ):
        cost = priors.Cost()
        with priors.measure(cost, batch=3):
            guided.GuidedDenoiser(prior, term)(x_t, t)
        assert cost.vjp == vjp / 3


class Spy(priors.Denoiser):
    """The prior, recording whether autograd was on when it ran."""

    counts_evaluations = False

    def __init__(self, prior):
        super().__init__(prior.schedule)
        self.prior, self.grad = prior, []

    def forward(self, x_t, t):
        self.grad.append(torch.is_grad_enabled() and x_t.requires_grad)
        return self.prior(x_t, t)


def test_the_prior_builds_no_graph_when_no_term_needs_its_vjp():
    prior, state = _prior(), torch.zeros(3, 1)
    x_t, t = torch.randn(3, 2, dtype=F64), torch.tensor(0.5)
    noisy, clean = Spy(prior), Spy(prior)
    plain = guided.GuidedDenoiser(
        noisy, guided.NoisyValueGuidance(NoisyLinearCritic(prior), state)
    )
    both = guided.GuidedDenoiser(
        clean,
        guided.NoisyValueGuidance(NoisyLinearCritic(prior), state),
        guided.ValueGuidance(LinearCritic(), state),
    )
    out = plain(x_t, t)
    both(x_t, t)
    assert noisy.grad == [False] and clean.grad == [True]
    assert not out.requires_grad


def test_bad_critics_and_states_are_refused():
    prior = _prior()
    with pytest.raises(TypeError, match="priors.Critic"):
        guided.ValueGuidance(torch.nn.Linear(3, 1), torch.zeros(1))
    with pytest.raises(ValueError, match="state value"):
        guided.ValueGuidance(priors.Critic(1, 0), torch.zeros(1))
    with pytest.raises(ValueError, match="NoisyValueGuidance"):
        guided.ValueGuidance(priors.Critic(1, 2, schedule=prior.schedule), torch.zeros(1))
    with pytest.raises(ValueError, match="noise-aware"):
        guided.NoisyValueGuidance(priors.Critic(1, 2), torch.zeros(1))
    with pytest.raises(ValueError, match=r"state must have shape \(B, 1\)"):
        guided.ValueGuidance(priors.Critic(1, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        guided.ValueGuidance(priors.Critic(1, 2), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="scale"):
        guided.ValueGuidance(priors.Critic(1, 2), torch.zeros(1), scale=-1.0)
    # a critic for 3-dimensional actions on a 2-dimensional action prior
    term = guided.ValueGuidance(priors.Critic(1, 3), torch.zeros(1))
    with pytest.raises(ValueError, match="3-dimensional actions"):
        guided.GuidedDenoiser(prior, term)(torch.zeros(2, 2, dtype=F64), torch.tensor(0.5))
    other = priors.Critic(1, 2, schedule=priors.LinearSchedule())
    with pytest.raises(ValueError, match="critic was trained on LinearSchedule"):
        guided.GuidedDenoiser(prior, guided.NoisyValueGuidance(other, torch.zeros(1)))(
            torch.zeros(2, 2, dtype=F64), torch.tensor(0.5)
        )


def test_the_critic_checks_its_inputs():
    critic = priors.Critic(3, 2)
    assert critic(torch.zeros(5, 3), torch.zeros(5, 2)).shape == (5,)
    assert priors.Critic(3, 0)(torch.zeros(5, 3)).shape == (5,)
    with pytest.raises(ValueError, match="action must have shape"):
        critic(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="clean critic takes no time"):
        critic(torch.zeros(5, 3), torch.zeros(5, 2), 0.5)
    with pytest.raises(ValueError, match="needs the time"):
        priors.Critic(3, 2, schedule=priors.CosineSchedule())(torch.zeros(5, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="state value"):
        priors.Critic(3, 0, schedule=priors.CosineSchedule())


def test_a_log_prob_critic_returns_the_log_sigmoid_of_its_logit():
    critic = priors.Critic(3, 2, output="log_prob")
    s, a = torch.randn(4, 3), torch.randn(4, 2)
    torch.testing.assert_close(critic(s, a), torch.nn.functional.logsigmoid(critic.logit(s, a)))
    assert bool((critic(s, a) <= 0).all())
    with pytest.raises(ValueError, match="output"):
        priors.Critic(3, 2, output="probability")


@pytest.mark.parametrize("output", ["value", "log_prob"])
@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_the_critics_written_out_gradient_is_autograds(output, noisy, depth, dtype):
    """value_and_grad runs the kernels autograd runs: the same value and gradient (to the
    last bits) for every kind of critic, batch size and scale."""
    torch.manual_seed(0)
    schedule = priors.CosineSchedule() if noisy else None
    critic = priors.Critic(3, 2, width=16, depth=depth, schedule=schedule, output=output)
    critic = critic.to(dtype).requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from the initialisation (LayerNorm's unit weights)
        for p in critic.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=dtype))
    for batch, scale in ((1, 1.0), (7, 2.5), (64, 0.0)):
        s = torch.randn(batch, 3, generator=g, dtype=dtype)
        a = torch.randn(batch, 2, generator=g, dtype=dtype)
        t = 0.4 if noisy else None
        value, grad = critic.value_and_grad(s, a, t, scale=scale)
        a_ = a.clone().requires_grad_(True)
        expected = critic(s, a_, t)
        (expected_grad,) = torch.autograd.grad(expected.sum(), a_)
        torch.testing.assert_close(value, expected, rtol=0, atol=0)
        tight = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {}
        torch.testing.assert_close(grad, scale * expected_grad, **tight)
        assert not grad.requires_grad and grad.shape == a.shape


def test_a_changed_critic_is_differentiated_by_autograd():
    torch.manual_seed(0)
    critic = priors.Critic(3, 2, width=8)
    critic.net.insert(2, torch.nn.Tanh())  # not the layers value_and_grad writes out
    s, a = torch.randn(5, 3), torch.randn(5, 2)
    value, grad = critic.value_and_grad(s, a, scale=3.0)
    a_ = a.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(critic(s, a_).sum(), a_)
    torch.testing.assert_close(value, critic(s, a))
    torch.testing.assert_close(grad, 3.0 * expected)
    with pytest.raises(ValueError, match="state value"):
        priors.Critic(3, 0).value_and_grad(torch.zeros(2, 3), torch.zeros(2, 0))
    with pytest.raises(ValueError, match="action must have shape"):
        priors.Critic(3, 2).value_and_grad(torch.zeros(2, 3), torch.zeros(2, 4))
