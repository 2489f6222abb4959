"""Classifier and safety guidance: exact on a Gaussian mixture, whose noisy classifier is
the mixture's own responsibilities; clear errors for mismatched classifiers."""

import pytest
import torch

from torch import nn

import guided
import priors


def _mixture():
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -3.0]], dtype=torch.float64)
    covs = torch.stack([torch.eye(2), 0.5 * torch.eye(2), torch.diag(torch.tensor([1.0, 0.2]))])
    weights = torch.tensor([0.5, 0.3, 0.2])
    return priors.GaussianMixture(weights, means, covs.double(), priors.LinearSchedule())


class ComponentClassifier(nn.Module):
    """The exact noisy classifier p(k | x_t) of a mixture: logits log w_k N(x_t; ...)."""

    def __init__(self, mixture, schedule=None):
        super().__init__()
        self.mixture = mixture
        self.num_classes = mixture.weights.numel()
        self.schedule = schedule or mixture.schedule

    def forward(self, x, t):
        return self.mixture._marginal(x, t)


def _restricted(mixture, keep):
    keep = torch.as_tensor(keep)
    return priors.GaussianMixture(
        mixture.weights[keep], mixture.means[keep], mixture.covs[keep], mixture.schedule
    )


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_scale_one_gives_the_component_posterior_mean(t):
    gmm = _mixture()
    g = torch.Generator().manual_seed(0)
    x_t = 2 * torch.randn(16, 2, generator=g, dtype=torch.float64)
    t = torch.tensor(t)
    for k in range(3):
        term = guided.ClassifierGuidance(ComponentClassifier(gmm), label=k, scale=1.0)
        guided_mean = guided.GuidedDenoiser(gmm, term)(x_t, t)
        torch.testing.assert_close(guided_mean, _restricted(gmm, [k])(x_t, t))


def test_safety_gives_the_allowed_components_posterior_mean():
    gmm = _mixture()
    g = torch.Generator().manual_seed(1)
    x_t, t = 2 * torch.randn(16, 2, generator=g, dtype=torch.float64), torch.tensor(0.4)
    term = guided.SafetyGuidance(ComponentClassifier(gmm), forbidden=[0], scale=1.0)
    torch.testing.assert_close(
        guided.GuidedDenoiser(gmm, term)(x_t, t), _restricted(gmm, [1, 2])(x_t, t)
    )
    # far from the forbidden component the push vanishes (negative guidance would not)
    far = torch.tensor([[0.0, -3.0]], dtype=torch.float64)
    g_safe = term(far, torch.tensor(0.05), far, gmm.schedule)
    negative = guided.ClassifierGuidance(ComponentClassifier(gmm), label=0, scale=-1.0)
    g_negative = negative(far, torch.tensor(0.05), far, gmm.schedule)
    assert float(g_safe.norm()) < 1e-2 * float(g_negative.norm())


def test_per_row_labels_and_independence():
    gmm = _mixture()
    x_t, t = torch.randn(3, 2, dtype=torch.float64), torch.tensor(0.5)
    term = guided.ClassifierGuidance(ComponentClassifier(gmm), label=torch.tensor([0, 1, 2]))
    out = guided.GuidedDenoiser(gmm, term)(x_t, t)
    for k in range(3):
        torch.testing.assert_close(out[k], _restricted(gmm, [k])(x_t[k : k + 1], t)[0])


def test_errors_name_the_problem():
    gmm = _mixture()
    classifier = ComponentClassifier(gmm)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        guided.ClassifierGuidance(classifier, label=3)
    with pytest.raises(TypeError, match="integer"):
        guided.ClassifierGuidance(classifier, label=1.5)
    with pytest.raises(ValueError, match="scale"):
        guided.ClassifierGuidance(classifier, label=1, scale=float("inf"))
    with pytest.raises(ValueError, match="nothing is left"):
        guided.SafetyGuidance(classifier, forbidden=[0, 1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        guided.SafetyGuidance(classifier, forbidden=0, scale=-1.0)
    clean = priors.load_classifier("digits", noisy=False)
    with pytest.raises(ValueError, match="noise-conditional"):
        guided.ClassifierGuidance(clean, label=1)
    term = guided.ClassifierGuidance(ComponentClassifier(gmm, priors.CosineSchedule()), 0)
    with pytest.raises(ValueError, match="disagrees"):
        guided.GuidedDenoiser(gmm, term)(torch.zeros(2, 2, dtype=torch.float64), torch.tensor(0.5))
    noisy = priors.load_classifier("digits", noisy=True)
    with pytest.raises(ValueError, match="takes images"):
        guided.ClassifierGuidance(noisy, 1)(
            torch.zeros(2, 3, 16, 16), torch.tensor(0.5), None, noisy.schedule
        )
    with pytest.raises(ValueError, match="rows"):
        guided.ClassifierGuidance(classifier, torch.tensor([0, 1]))(
            torch.zeros(3, 2, dtype=torch.float64), torch.tensor(0.5), None, gmm.schedule
        )


class TenClasses(priors.Denoiser):
    num_classes = 10

    def __init__(self):
        super().__init__(priors.LinearSchedule())

    def forward(self, x_t, t, label=None):
        return x_t


def test_a_classifier_for_other_classes_is_refused():
    gmm = _mixture()
    with pytest.raises(ValueError, match="3 classes, the prior has 10"):
        guided.GuidedDenoiser(TenClasses(), guided.ClassifierGuidance(ComponentClassifier(gmm), 0))


def test_shipped_classifier_guidance_runs_with_a_sampler():
    """On the shipped digits prior: the guided sample is finite, the guidance moves it, and
    one classifier gradient per step costs no VJP of the prior."""
    prior = priors.load("digits")
    noisy = priors.load_classifier("digits", noisy=True)
    g = torch.Generator().manual_seed(0)
    x_T = guided.initial_noise(prior.schedule, (2, *prior.shape), g)
    ts = guided.time_grid(5)
    cost = priors.Cost()
    with priors.measure(cost, batch=2):
        x = guided.DDIM()(
            guided.GuidedDenoiser(prior, guided.ClassifierGuidance(noisy, 7, scale=5.0)),
            x_T,
            ts,
            generator=torch.Generator().manual_seed(1),
        )
    plain = guided.DDIM()(prior, x_T, ts, generator=torch.Generator().manual_seed(1))
    assert bool(torch.isfinite(x).all()) and cost.vjp == 0 and cost.nfe == 5
    assert float((x - plain).abs().max()) > 1e-3
