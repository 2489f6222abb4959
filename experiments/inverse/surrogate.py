r"""The contrastive surrogate likelihood of the black-box app: training signals from the
prior (clean samples and denoised estimates of them) and the critic trained on simulated
pairs :math:`(u, A(x))`."""

from __future__ import annotations

import time

import torch

from omegaconf import DictConfig
from torch import Tensor

import guided
import operators
import priors

__all__ = ["prior_samples", "train_surrogate"]


def prior_samples(cfg: DictConfig, prior: priors.Denoiser) -> Tensor:
    r"""The signals the surrogate's training pairs are simulated from and the inputs its
    signal encoder sees, :math:`(N, 1 + V, *shape)`: ``surrogate.pairs`` DDIM samples
    :math:`x` of the prior (seeded, in [-1, 1]) in slot 0, then ``surrogate.views``
    denoised estimates :math:`\hat x(\alpha_t x + \sigma_t \epsilon)` at
    :math:`t \sim U(0, \text{surrogate.view\_t})` each (one network evaluation apiece)."""
    node = cfg.surrogate
    g = torch.Generator().manual_seed(int(cfg.seed) + 100)
    x_T = guided.initial_noise(prior.schedule, (int(node.pairs), *prior.shape), g)
    with torch.no_grad():
        x = guided.DDIM()(prior, x_T, guided.time_grid(int(node.prior_steps))).clamp(-1, 1)
        slots = [x]
        for _ in range(int(node.views)):
            t = torch.rand(len(x), generator=g, dtype=torch.float64) * float(node.view_t)
            alpha_t, sigma_t = (
                c.to(x.dtype).view(-1, *[1] * (x.ndim - 1)) for c in prior.schedule(t)
            )
            x_t = alpha_t * x + sigma_t * guided.initial_noise(prior.schedule, x.shape, g)
            slots.append(prior(x_t, t).clamp(-1, 1).to(x.dtype))
    return torch.stack(slots, 1)


def train_surrogate(
    cfg: DictConfig, op: operators.Operator, signals: Tensor
) -> tuple[priors.ContrastiveLikelihood, dict[str, float]]:
    r"""A contrastive critic trained on pairs :math:`(u, A(x))`: :math:`x` the clean slot of
    a batch of ``signals`` (:func:`prior_samples`), :math:`u` one of its slots drawn
    uniformly (the signal or a denoised estimate of it, which is what the critic meets at
    :math:`\hat x(x_t)` while sampling), both shifted by up to one pixel; a fresh simulation
    every step."""
    node = cfg.surrogate
    torch.manual_seed(int(cfg.seed))  # the encoders' initialisation only
    critic = priors.ContrastiveLikelihood(
        op.in_shape, op.out_shape, features=int(node.features), width=int(node.width)
    )
    optimiser = torch.optim.Adam(critic.parameters(), lr=float(node.lr))
    g = torch.Generator().manual_seed(int(cfg.seed) + 101)
    losses, batch = [], int(node.batch)
    start = time.perf_counter()
    for _ in range(int(node.steps)):
        rows = torch.randint(0, len(signals), (batch,), generator=g)
        slot = torch.randint(0, signals.shape[1], (batch,), generator=g)
        dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
        x = torch.roll(signals[rows, 0], (dy, dx), dims=(-2, -1))
        u = torch.roll(signals[rows, slot], (dy, dx), dims=(-2, -1))
        y = op(x).float()
        if not bool(torch.isfinite(y).all()):
            raise FloatingPointError(f"{type(op).__name__} returned NaN or Inf in training")
        optimiser.zero_grad()
        loss = critic.loss(u, y)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    critic.requires_grad_(False).eval()
    tail = losses[-50:]
    return critic, {
        "final_loss": sum(tail) / len(tail),
        "chance_loss": float(torch.tensor(float(batch)).log()),
        "simulations": float(int(node.steps) * batch),
        "train_s": time.perf_counter() - start,
    }
