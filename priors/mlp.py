r"""A residual MLP denoiser for vector-valued data (joint angles, actions, low-dimensional
signals), the vector counterpart of :mod:`priors.network`'s U-Net.

The network predicts :math:`v = \alpha_t \epsilon - \sigma_t x` (Salimans & Ho, 2022) from
:math:`x_t` and a sinusoidal embedding of :math:`t`; each residual block is
:math:`h \leftarrow h + W_2\, \mathrm{SiLU}(W_1\, \mathrm{LN}(h) + e(t))`, and the output
layer starts at zero, so an untrained denoiser returns :math:`\hat x = \alpha_t x_t` (the
posterior mean of unit-variance data centred at 0 in the high-noise limit).

References:
    | Progressive Distillation for Fast Sampling of Diffusion Models (Salimans & Ho, 2022)
    | https://arxiv.org/abs/2202.00512
"""

from __future__ import annotations

import torch

from torch import Tensor, nn

from priors.denoiser import Denoiser
from priors.schedules import Schedule
from priors.tweedie import x0_from_v
from priors.unet import timestep_embedding

__all__ = ["MLP", "MLPDenoiser"]


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.inner = nn.Linear(width, width)
        self.outer = nn.Linear(width, width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.outer(nn.functional.silu(self.inner(self.norm(h)) + emb))


class MLP(nn.Module):
    r"""The residual MLP :math:`(x_t, t) \mapsto v`, inputs :math:`(B, D)` and :math:`(B,)`.

    Arguments:
        dim: The data dimension :math:`D`.
        width: The hidden width.
        blocks: The number of residual blocks.
        embedding: The size of the sinusoidal time embedding.
    """

    def __init__(self, dim: int, width: int = 128, blocks: int = 3, embedding: int = 64) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("width", width), ("blocks", blocks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.dim, self.embedding = dim, embedding
        self.time = nn.Sequential(nn.Linear(embedding, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        emb = self.time(timestep_embedding(t, self.embedding))
        h = self.inp(x_t)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)


class MLPDenoiser(Denoiser):
    r"""A v-prediction :class:`MLP` as a denoiser of vectors :math:`(B, D)`.

    Arguments:
        network: The MLP.
        schedule: The schedule it is (or will be) trained with.
    """

    def __init__(self, network: MLP, schedule: Schedule) -> None:
        super().__init__(schedule)
        self.network = network
        self.shape = (network.dim,)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        if x_t.ndim != 2 or x_t.shape[1] != self.network.dim:
            raise ValueError(
                f"x_t must have shape (B, {self.network.dim}), got {tuple(x_t.shape)}"
            )
        dtype = next(self.network.parameters()).dtype
        v = self.network(x_t.to(dtype), t.expand(x_t.shape[0])).to(x_t.dtype)
        return x0_from_v(x_t, v, *self.schedule(t))

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""The v-prediction loss :math:`E_{t, \epsilon} \lVert v_\theta(x_t, t) - v
        \rVert^2` on a batch of clean data :math:`(B, D)`, :math:`t \sim U(0, 1)`."""
        t = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        alpha_t, sigma_t = (c.to(x.dtype)[:, None] for c in self.schedule(t))
        x_t = alpha_t * x + sigma_t * eps
        target = alpha_t * eps - sigma_t * x
        return (self.network(x_t, t) - target).square().sum(1).mean()
