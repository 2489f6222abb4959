"""Classifier-free guidance: the extrapolation formula, one batched call, clear errors."""

import pytest
import torch

import guided
import priors


class Toy(priors.Denoiser):
    """x_hat = x_t / 2 + label (label -1 = unconditional gives x_t / 2)."""

    num_classes = 4

    def __init__(self):
        super().__init__(priors.CosineSchedule())
        self.calls = []

    def forward(self, x_t, t, label=None):
        self.calls.append(x_t.shape[0])
        offset = torch.where(label < 0, 0, label + 1).to(x_t.dtype).view(-1, 1)
        return x_t / 2 + offset


def test_extrapolation_and_a_single_batched_call():
    toy = Toy()
    x_t, t = torch.randn(3, 2), torch.tensor(0.5)
    label = torch.tensor([0, 1, 3])
    cost = priors.Cost()
    with priors.measure(cost, batch=3):
        out = guided.ClassifierFree(toy, 2.5)(x_t, t, label=label)
    expected = x_t / 2 + 2.5 * (label + 1).float().view(-1, 1)
    torch.testing.assert_close(out, expected)
    assert toy.calls == [6] and cost.nfe == 2  # conditional and unconditional in one call
    torch.testing.assert_close(guided.ClassifierFree(toy, 0.0)(x_t, t, label=label), x_t / 2)
    toy.calls.clear()
    plain = guided.ClassifierFree(toy, 1.0)(x_t, t, label=label)
    torch.testing.assert_close(plain, toy(x_t, t, label=label))
    assert toy.calls[0] == 3  # scale 1 is the conditional prediction: one pass


def test_errors():
    with pytest.raises(ValueError, match="class-conditional"):
        guided.ClassifierFree(
            priors.GaussianMixture(
                torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None], priors.CosineSchedule()
            ),
            2.0,
        )
    with pytest.raises(ValueError, match="scale"):
        guided.ClassifierFree(Toy(), float("nan"))
    with pytest.raises(ValueError, match="missing"):
        guided.ClassifierFree(Toy(), 2.0)(torch.zeros(1, 2), torch.tensor(0.5))
