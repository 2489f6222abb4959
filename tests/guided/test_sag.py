"""Self-attention guidance: the mask rule, the extrapolation form, cost and errors."""

import pytest
import torch

import guided
import priors

from guided.sag import attention_mask


def test_mask_marks_keys_attended_above_uniform():
    n, heads = 4, 2
    probs = torch.full((2, heads, n * n, n * n), 1.0 / (n * n))
    assert attention_mask(probs, (8, 8)).sum() == 0  # uniform attention: nothing salient
    probs[1, :, :, :] = 0.0
    probs[1, :, :, 5] = 1.0  # every query looks at key 5 = pixel (1, 1) of the 4x4 grid
    mask = attention_mask(probs, (8, 8))
    assert mask.shape == (2, 1, 8, 8) and mask[0].sum() == 0
    expected = torch.zeros(8, 8)
    expected[2:4, 2:4] = 1.0  # nearest upsampling of grid cell (1, 1)
    torch.testing.assert_close(mask[1, 0], expected)
    with pytest.raises(ValueError, match="square"):
        attention_mask(torch.ones(1, 1, 5, 5), (8, 8))


@pytest.fixture(scope="module")
def digits():
    return priors.load("digits")


def test_extrapolation_form_cost_and_row_independence(digits):
    g = torch.Generator().manual_seed(0)
    x_t = guided.initial_noise(digits.schedule, (3, *digits.shape), g)
    t = torch.tensor(0.4)
    label = torch.tensor([1, 4, 7])
    with torch.no_grad():
        plain = digits(x_t, t, label=label)
        outs = {}
        for s in (0.0, 1.0, 2.0):
            cost = priors.Cost()
            with priors.measure(cost, batch=3):
                outs[s] = guided.SelfAttentionGuidance(digits, s)(x_t, t, label=label)
            assert cost.nfe == (1 if s == 0 else 2)
        torch.testing.assert_close(outs[0.0], plain)
        # linear in the scale: x(s) = x(0) + s (x(1) - x(0))
        torch.testing.assert_close(
            outs[2.0] - plain, 2 * (outs[1.0] - plain), atol=1e-5, rtol=1e-4
        )
        assert float((outs[1.0] - plain).abs().max()) > 1e-4  # the guidance does something
        # an empty mask (nothing salient) re-noises x_hat to x_t itself: no change
        silent = guided.SelfAttentionGuidance(digits, 1.0, threshold=float("inf"))
        torch.testing.assert_close(silent(x_t, t, label=label), plain, atol=1e-5, rtol=1e-4)
        one = guided.SelfAttentionGuidance(digits, 1.0)(x_t[1:2], t, label=label[1:2])
        torch.testing.assert_close(one, outs[1.0][1:2], atol=1e-5, rtol=1e-4)


def test_errors_name_the_problem(digits):
    with pytest.raises(ValueError, match="exposing self-attention"):
        guided.SelfAttentionGuidance(priors.load("textures"), 0.5)
    with pytest.raises(ValueError, match="mid.self"):
        guided.SelfAttentionGuidance(digits, 0.5, layer="mid.cross")
    with pytest.raises(ValueError, match="scale"):
        guided.SelfAttentionGuidance(digits, -1.0)
    with pytest.raises(TypeError, match="blur_sigma"):
        guided.SelfAttentionGuidance(digits, 0.5, blur_sigma="wide")


def test_stacks_on_classifier_free_guidance(digits):
    """SAG of a CFG denoiser: CFG itself at scale 0, four evaluations per row (two CFG
    passes), linear in the scale and row-independent (the mask averages the conditional
    and unconditional maps of each row)."""
    g = torch.Generator().manual_seed(2)
    x_t = guided.initial_noise(digits.schedule, (3, *digits.shape), g)
    t, label = torch.tensor(0.5), torch.tensor([0, 3, 8])
    cfg = guided.ClassifierFree(digits, 2.0)
    with torch.no_grad():
        plain = cfg(x_t, t, label=label)
        torch.testing.assert_close(
            guided.SelfAttentionGuidance(cfg, 0.0)(x_t, t, label=label), plain
        )
        cost = priors.Cost()
        with priors.measure(cost, batch=3):
            one = guided.SelfAttentionGuidance(cfg, 1.0)(x_t, t, label=label)
        assert cost.nfe == 4
        two = guided.SelfAttentionGuidance(cfg, 2.0)(x_t, t, label=label)
        torch.testing.assert_close(two - plain, 2 * (one - plain), atol=1e-5, rtol=1e-4)
        row = guided.SelfAttentionGuidance(cfg, 1.0)(x_t[2:], t, label=label[2:])
        torch.testing.assert_close(row, one[2:], atol=1e-5, rtol=1e-4)
    assert float((one - plain).abs().max()) > 1e-4


def test_attention_rows_must_be_a_multiple_of_the_batch():
    from guided.sag import _per_row

    probs = torch.rand(6, 2, 4, 4)
    torch.testing.assert_close(_per_row(probs, 3), probs.view(2, 3, 2, 4, 4).mean(0))
    with pytest.raises(ValueError, match="not a multiple of the batch 4"):
        _per_row(probs, 4)
