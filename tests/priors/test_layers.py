"""run_layers computes exactly what nn.Sequential computes, gradients included."""

import pytest
import torch

from torch import nn

from priors.layers import run_layers


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_run_layers_equals_the_sequential_module(dtype):
    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Linear(5, 8), nn.LayerNorm(8), nn.SiLU(), nn.Linear(8, 8, bias=False),
        nn.Tanh(), nn.LayerNorm(8, elementwise_affine=False), nn.Linear(8, 3),
    ).to(dtype)  # fmt: skip
    x = torch.randn(7, 5, dtype=dtype, generator=torch.Generator().manual_seed(1))
    x_ours, x_theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, theirs = run_layers(layers, x_ours), layers(x_theirs)
    assert torch.equal(ours, theirs)
    weight = layers[0].weight
    g_ours = torch.autograd.grad(ours.square().sum(), (x_ours, weight))
    g_theirs = torch.autograd.grad(theirs.square().sum(), (x_theirs, weight))
    for a, b in zip(g_ours, g_theirs, strict=True):
        assert torch.equal(a, b)
