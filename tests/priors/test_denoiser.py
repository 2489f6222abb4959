"""The denoiser-wrapper base: a wrapper shares the prior's schedule and description, and
network evaluations are counted once, where the prior runs."""

import pytest
import torch

import guided
import priors


class Doubled(priors.Wrapper):
    """Calls the prior twice per call (as classifier-free guidance does)."""

    def forward(self, x_t, t, **cond):
        return 0.5 * (self.prior(x_t, t, **cond) + self.prior(x_t, t, **cond))


def _mixture():
    return priors.GaussianMixture(
        torch.tensor([0.5, 0.5]), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]),
        torch.eye(2).expand(2, 2, 2) * 0.1, priors.CosineSchedule(),
    )  # fmt: skip


def test_a_wrapper_shares_the_prior_and_counts_only_its_calls():
    prior = _mixture()
    wrapped = Doubled(Doubled(prior))
    assert wrapped.schedule is prior.schedule and wrapped.shape == prior.shape
    cost = priors.Cost()
    x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    x = guided.DDIM()(wrapped, x_T, guided.time_grid(5), cost=cost)
    assert cost.nfe == 4 * 5  # four prior calls per step, the wrappers count none
    torch.testing.assert_close(x, guided.DDIM()(prior, x_T, guided.time_grid(5)))


def test_the_library_wrappers_share_the_base():
    prior = priors.load("digits")
    wrappers = [
        guided.ClassifierFree(prior, 2.0),
        guided.SelfAttentionGuidance(prior, 0.3),
        priors.Accelerated(prior),
    ]
    for wrapper in wrappers:
        assert isinstance(wrapper, priors.Wrapper) and wrapper.prior is prior
        assert wrapper.shape == prior.shape and wrapper.num_classes == prior.num_classes


def test_a_wrapper_refuses_what_is_not_a_denoiser():
    with pytest.raises(TypeError, match="prior must be a priors.Denoiser"):
        Doubled(torch.nn.Identity())
