r"""The sinusoidal time embedding of the networks (Vaswani et al., 2017; as in DDPM).

A time :math:`t \in [0, 1]` scaled by ``scale`` becomes
:math:`(\cos(\text{scale}\, t\, \omega_k), \sin(\text{scale}\, t\, \omega_k))_k` with
:math:`\omega_k = 10000^{-k / (d / 2)}` (zero-padded to an odd ``dim``).

References:
    | Attention Is All You Need (Vaswani et al., 2017) https://arxiv.org/abs/1706.03762
"""

from __future__ import annotations

import functools
import math

import torch

from torch import Tensor, nn

__all__ = ["timestep_embedding"]


@functools.lru_cache(maxsize=64)
def _frequencies(half: int, device: torch.device) -> Tensor:
    """The embedding's frequencies :math:`10000^{-k / half}` (computed once per size, as an
    ordinary tensor even inside ``inference_mode``, so later autograd may save it)."""
    with torch.inference_mode(False):
        return torch.exp(-math.log(10000) * torch.arange(half, device=device) / half)


def timestep_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    r"""Sinusoidal embedding of times :math:`t \in [0, 1]` (shape :math:`(B,)`) scaled by
    ``scale``, shape :math:`(B, dim)` (Vaswani et al., 2017; as in DDPM)."""
    half = dim // 2
    args = scale * t.float()[:, None] * _frequencies(half, t.device)[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))
