r"""The contrastive surrogate likelihood of the black-box app: training signals from the
prior (clean samples and denoised estimates of them) and the critic trained on simulated
pairs :math:`(u, A(x))`."""

from __future__ import annotations

import time

from collections.abc import Callable

import torch

from omegaconf import DictConfig
from torch import Tensor

import guided
import operators
import priors

__all__ = ["denoised_views", "fit_critic", "prior_samples", "train_surrogate"]


def prior_samples(cfg: DictConfig, prior: priors.Denoiser) -> Tensor:
    r"""The signals the surrogate's training pairs are simulated from and the inputs its
    signal encoder sees, :math:`(N, 1 + V, *shape)`: ``surrogate.pairs`` DDIM samples
    :math:`x` of the prior (seeded, in [-1, 1]) with their :func:`denoised_views`."""
    node = cfg.surrogate
    g = torch.Generator().manual_seed(int(cfg.seed) + 100)
    x_T = guided.initial_noise(prior.schedule, (int(node.pairs), *prior.shape), g)
    with torch.no_grad():
        x = guided.DDIM()(prior, x_T, guided.time_grid(int(node.prior_steps))).clamp(-1, 1)
    return denoised_views(prior, x, int(node.views), float(node.view_t), g)


def denoised_views(
    prior: priors.Denoiser,
    x: Tensor,
    views: int,
    view_t: float,
    generator: torch.Generator,
    chunk: int = 512,
) -> Tensor:
    r"""Signals :math:`x` :math:`(N, *shape)` in slot 0 of :math:`(N, 1 + V, *shape)`, then
    ``views`` denoised estimates :math:`\hat x(\alpha_t x + \sigma_t \epsilon)` at
    :math:`t \sim U(0, \text{view\_t})` each (one network evaluation apiece, clamped to
    [-1, 1]): what the signal encoder meets at :math:`\hat x(x_t)` while sampling. The
    network runs on ``chunk`` rows at a time (the draws do not depend on it)."""
    slots = [x]
    with torch.no_grad():
        for _ in range(views):
            t = torch.rand(len(x), generator=generator, dtype=torch.float64) * view_t
            alpha_t, sigma_t = (
                c.to(x.dtype).view(-1, *[1] * (x.ndim - 1)) for c in prior.schedule(t)
            )
            noise = guided.initial_noise(prior.schedule, x.shape, generator)
            x_t = alpha_t * x + sigma_t * noise.to(x.dtype)
            chunks = zip(x_t.split(chunk), t.split(chunk), strict=True)
            slots.append(torch.cat([prior(a, b).clamp(-1, 1).to(x.dtype) for a, b in chunks]))
    return torch.stack(slots, 1)


def train_surrogate(
    cfg: DictConfig, op: operators.Operator, signals: Tensor
) -> tuple[priors.ContrastiveLikelihood, dict[str, float]]:
    r"""A contrastive critic trained on pairs :math:`(u, A(x))`: :math:`x` the clean slot of
    a batch of ``signals`` (:func:`prior_samples`), :math:`u` one of its slots drawn
    uniformly (the signal or a denoised estimate of it, which is what the critic meets at
    :math:`\hat x(x_t)` while sampling), both shifted by up to one pixel; a fresh simulation
    every step."""
    batch = int(cfg.surrogate.batch)

    def draw(g: torch.Generator) -> tuple[Tensor, Tensor]:
        rows = torch.randint(0, len(signals), (batch,), generator=g)
        slot = torch.randint(0, signals.shape[1], (batch,), generator=g)
        dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
        x = torch.roll(signals[rows, 0], (dy, dx), dims=(-2, -1))
        u = torch.roll(signals[rows, slot], (dy, dx), dims=(-2, -1))
        y = op(x).float()
        if not bool(torch.isfinite(y).all()):
            raise FloatingPointError(f"{type(op).__name__} returned NaN or Inf in training")
        return u, y

    critic, stats = fit_critic(cfg.surrogate, op.in_shape, op.out_shape, draw, int(cfg.seed))
    return critic, stats | {"simulations": float(int(cfg.surrogate.steps) * batch)}


def fit_critic(
    node: DictConfig,
    x_shape: tuple[int, ...],
    y_shape: tuple[int, ...],
    draw: Callable[[torch.Generator], tuple[Tensor, Tensor]],
    seed: int,
) -> tuple[priors.ContrastiveLikelihood, dict[str, float]]:
    r"""Trains a :class:`priors.ContrastiveLikelihood` (``node.features``, ``node.width``)
    by Adam (``node.lr``) for ``node.steps`` steps on the matching batches ``draw(g)``
    returns, ``(u, y)``; returns it frozen, with its final loss (the mean of the last 50
    steps), the chance level :math:`\log B` and the training time."""
    torch.manual_seed(seed)  # the encoders' initialisation only
    critic = priors.ContrastiveLikelihood(
        x_shape, y_shape, features=int(node.features), width=int(node.width)
    )
    optimiser = torch.optim.Adam(critic.parameters(), lr=float(node.lr))
    g = torch.Generator().manual_seed(seed + 101)
    losses, start = [], time.perf_counter()
    for _ in range(int(node.steps)):
        u, y = draw(g)
        optimiser.zero_grad()
        loss = critic.loss(u, y)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    critic.requires_grad_(False).eval()
    tail = losses[-50:]
    return critic, {
        "final_loss": sum(tail) / len(tail),
        "chance_loss": float(torch.tensor(float(len(u))).log()),
        "train_s": time.perf_counter() - start,
    }
