"""Perturbed-attention guidance on the shipped digits prior: scale 0 is the prior, the
update is linear in the scale and moves away from the perturbed pass, two network
evaluations per row, conditions reach both passes, and bad input is refused."""

import pytest
import torch

import guided
import priors


@pytest.fixture(scope="module")
def prior():
    return priors.load("digits")


def test_the_update_is_linear_in_the_scale_away_from_the_perturbed_pass(prior):
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(0.6)
    label = torch.tensor([1, 4, 7])
    with torch.no_grad():
        plain = prior(x, t, label=label)
        with priors.identity_attention(prior, ["mid.self"]):
            perturbed = prior(x, t, label=label)
        zero = guided.PAG(prior, 0.0)(x, t, label=label)
        one = guided.PAG(prior, 1.0)(x, t, label=label)
        three = guided.PAG(prior, 3.0)(x, t, label=label)
    torch.testing.assert_close(zero, plain, rtol=0, atol=0)
    torch.testing.assert_close(one, 2 * plain - perturbed, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(three - plain, 3 * (one - plain), rtol=1e-4, atol=1e-5)
    assert float((plain - perturbed).abs().max()) > 1e-3  # the perturbation does something
    with torch.no_grad():  # the label reaches the perturbed pass too
        other = guided.PAG(prior, 1.0)(x, t, label=torch.tensor([0, 0, 0]))
    assert not torch.allclose(other, one, atol=1e-3)


def test_with_cfg_scale_it_is_the_three_pass_form(prior):
    """cfg_scale w: x_null + w (x_c - x_null) + s (x_c - x_c,perturbed), three NFE per row;
    at s = 0 it is ClassifierFree exactly."""
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    t = torch.tensor(0.5)
    label = torch.tensor([2, 5, 9])
    with torch.no_grad():
        conditional = prior(x, t, label=label)
        unconditional = prior(x, t, label=torch.tensor([-1, -1, -1]))
        with priors.identity_attention(prior, ["mid.self"]):
            perturbed = prior(x, t, label=label)
        cost = priors.Cost()
        with priors.measure(cost, batch=3):
            got = guided.PAG(prior, 2.0, cfg_scale=3.0)(x, t, label=label)
        cfg_only = guided.PAG(prior, 0.0, cfg_scale=3.0)(x, t, label=label)
        cfg = guided.ClassifierFree(prior, 3.0)(x, t, label=label)
    expected = unconditional + 3 * (conditional - unconditional) + 2 * (conditional - perturbed)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cfg_only, cfg, rtol=0, atol=0)
    assert (cost.nfe, cost.vjp) == (3, 0)
    cost = priors.Cost()
    with torch.no_grad(), priors.measure(cost, batch=3):  # w = 1: no unconditional pass
        at_one = guided.PAG(prior, 2.0, cfg_scale=1.0)(x, t, label=label)
    torch.testing.assert_close(at_one, 3 * conditional - 2 * perturbed, rtol=1e-5, atol=1e-5)
    assert cost.nfe == 2
    with pytest.raises(ValueError, match="needs label="):
        guided.PAG(prior, 2.0, cfg_scale=3.0)(x, t)


def test_two_evaluations_per_row_and_layers_by_name(prior):
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    cost = priors.Cost()
    pag = guided.PAG(prior, 2.0, layers=["mid.self", "up.1.0.self"])
    with torch.no_grad(), priors.measure(cost, batch=2):
        pag(x, torch.tensor(0.4))
    assert (cost.nfe, cost.vjp) == (2, 0)
    assert guided.PAG(prior, 2.0).layers == ["mid.self"]


def test_bad_input_is_refused(prior):
    with pytest.raises(ValueError, match="scale"):
        guided.PAG(prior, -1.0)
    with pytest.raises(ValueError, match="scale"):
        guided.PAG(prior, float("inf"))
    for bad in (["mid.cross"], ["nope"], []):
        with pytest.raises(ValueError, match="self-attention"):
            guided.PAG(prior, 1.0, layers=bad)
    with pytest.raises(TypeError, match="layers"):
        guided.PAG(prior, 1.0, layers="mid.self")
    gaussian = priors.GaussianMixture(
        torch.ones(1), torch.zeros(1, 4), torch.eye(4)[None], priors.LinearSchedule()
    )
    with pytest.raises(ValueError, match="self-attention layers"):
        guided.PAG(gaussian, 1.0)
    with pytest.raises(TypeError, match="Denoiser"):
        guided.PAG(torch.nn.Identity(), 1.0)
    with pytest.raises(ValueError, match="cfg_scale must be"):
        guided.PAG(prior, 1.0, cfg_scale=float("nan"))
    with pytest.raises(ValueError, match="no null value for the condition"):
        guided.PAG(prior, 1.0, cfg_scale=2.0, key="prompt_embeds")
