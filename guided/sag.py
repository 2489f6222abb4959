r"""Self-attention guidance (SAG).

SAG guides a prior away from a version of its own prediction whose salient regions are
blurred (Hong et al., §4 and Alg. 1 of the official code):

1. one pass at :math:`x_t` gives :math:`\hat x` (so :math:`\hat\epsilon`) and the self-attention
   probabilities :math:`P \in \mathbb{R}^{B \times h \times N \times N}` of a chosen layer;
2. the mask marks the keys attended more than uniformly,
   :math:`M = [\sum_{q} \bar P_{q k} > 1]` with :math:`\bar P` the mean over heads, reshaped
   to the layer's grid and upsampled (nearest) to the image;
3. :math:`\bar x = M \odot \operatorname{blur}(\hat x) + (1 - M) \odot \hat x` is re-noised
   with the *same* predicted noise, :math:`\bar x_t = \alpha_t \bar x + \sigma_t \hat\epsilon`;
4. a second pass gives :math:`\bar\epsilon = \epsilon(\bar x_t)`, and

.. math:: \tilde\epsilon = \hat\epsilon + s\,(\hat\epsilon - \bar\epsilon),

returned as :math:`\tilde x = (x_t - \sigma_t \tilde\epsilon) / \alpha_t` (the official flag
``guide_scale`` is :math:`1 + s`). Two network evaluations per row. It works for any prior
whose network exposes attention through :func:`priors.attention.record_attention` (our U-Net,
diffusers U-Nets through :func:`priors.adapters.load_diffusers` and ADM checkpoints through
:func:`priors.adapters.load_adm`), wraps conditional
priors (keywords pass through) and stacks with CFG and measurement terms. Wrapping
classifier-free guidance, :math:`\hat x` and :math:`\bar x` are the guided predictions
(four network evaluations per row) and the mask comes from the attention averaged over the
conditional and unconditional passes (diffusers' SAG pipeline uses the unconditional one).

References:
    | Improving Sample Quality of Diffusion Models Using Self-Attention Guidance
    | (Hong et al., ICCV 2023) https://arxiv.org/abs/2210.00939
"""

from __future__ import annotations

import math

from typing import Any

import torch
import torch.nn.functional as F

from torch import Tensor

import checks

from operators import Blur, gaussian_kernel
from priors import Denoiser, Wrapper
from priors.attention import record_attention, self_attention
from priors.tweedie import append_dims, eps_from_x0, x0_from_eps

__all__ = ["SelfAttentionGuidance", "attention_mask"]


def attention_mask(probs: Tensor, size: tuple[int, int], threshold: float = 1.0) -> Tensor:
    r"""The SAG mask :math:`(B, 1, H, W)` (0/1) from self-attention probabilities
    :math:`(B, h, N, N)` over an :math:`n \times n` grid (:math:`N = n^2`): keys whose
    attention summed over queries (mean over heads) exceeds ``threshold``."""
    if probs.ndim != 4 or probs.shape[-1] != probs.shape[-2]:
        raise ValueError(f"self-attention maps must be (B, heads, N, N), got {tuple(probs.shape)}")
    n = math.isqrt(probs.shape[-1])
    if n * n != probs.shape[-1]:
        raise ValueError(f"the attention grid must be square, got N = {probs.shape[-1]}")
    attended = probs.mean(1).sum(1)  # (B, N): how much each key is attended
    mask = (attended > threshold).to(probs.dtype).reshape(-1, 1, n, n)
    return F.interpolate(mask, size=size, mode="nearest")


def _per_row(probs: Tensor, b: int) -> Tensor:
    """One attention map per row of :math:`x_t`: a wrapped denoiser that evaluates the
    network on :math:`k` stacked copies (classifier-free guidance's condition sets) records
    :math:`k B` maps, averaged here over the copies."""
    if probs.shape[0] == b:
        return probs
    if probs.shape[0] % b:
        raise ValueError(
            f"the attention maps have {probs.shape[0]} rows, not a multiple of the batch {b}"
        )
    return probs.reshape(probs.shape[0] // b, b, *probs.shape[1:]).mean(0)


class SelfAttentionGuidance(Wrapper):
    r"""Self-attention guidance of a prior with attention layers.

    Arguments:
        prior: A denoiser whose network has self-attention layers (a shipped prior).
        scale: :math:`s` (0: the prior; the authors' README reports :math:`s` from 0.01, LSUN
            Horse, to 0.8, unconditional ImageNet 256).
        layer: The self-attention layer whose maps make the mask (see
            ``priors.attention.attention_layers``); default: the middle block's.
        blur_sigma: The Gaussian blur's standard deviation in pixels.
        threshold: The mask threshold on summed attention (1 = uniform).
    """

    def __init__(
        self,
        prior: Denoiser,
        scale: float,
        layer: str | None = None,
        blur_sigma: float = 1.0,
        threshold: float = 1.0,
    ) -> None:
        if not isinstance(prior, Denoiser):
            raise TypeError(f"prior must be a priors.Denoiser, got {type(prior).__name__}")
        selfs = self_attention(prior)
        if not selfs:
            raise ValueError(
                f"self-attention guidance needs a prior exposing self-attention maps; "
                f"{type(prior).__name__} has none"
            )
        if layer is None:  # the middle block's first self-attention layer
            middle = [name for name in selfs if name.startswith("mid.")]
            if not middle:
                raise ValueError(f"the prior has no middle self-attention; pick layer= in {selfs}")
            layer = middle[0]
        if layer not in selfs:
            raise ValueError(f"no self-attention layer {layer!r}; the prior has {selfs}")
        scale = checks.number(scale, "scale", low=0)
        blur_sigma = checks.number(blur_sigma, "blur_sigma", low=0, open_low=True)
        threshold = checks.number(threshold, "threshold", low=0, infinite=True)
        super().__init__(prior)
        self.scale, self.layer, self.threshold = scale, layer, threshold
        self.blur_sigma = blur_sigma
        self._blurs: dict[tuple[int, ...], Blur] = {}  # one operator per image shape

    def blur(self, x: Tensor) -> Tensor:
        """Gaussian blur with reflected boundaries (kernel side about 6 sigma, odd, at most
        the image side); the operator is built once per image shape."""
        shape = tuple(x.shape[1:])
        if shape not in self._blurs:
            side = min(shape[-2:])
            size = max(1, min(2 * math.ceil(3 * self.blur_sigma) + 1, side - (1 - side % 2)))
            kernel = gaussian_kernel(self.blur_sigma, size=size)
            self._blurs[shape] = Blur(kernel, shape, padding="reflect")
        return self._blurs[shape](x)

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        with record_attention(self.prior) as maps:
            x_hat = self.prior(x_t, t, **cond)
        if self.scale == 0:
            return x_hat
        alpha_t, sigma_t = (c.to(x_t.dtype) for c in self.schedule(t))
        eps = eps_from_x0(x_t, x_hat, alpha_t, sigma_t)
        mask = attention_mask(
            _per_row(maps[self.layer], x_t.shape[0]), x_t.shape[-2:], self.threshold
        )
        mask = mask.to(x_t.dtype)
        degraded = mask * self.blur(x_hat) + (1 - mask) * x_hat
        x_bar = append_dims(alpha_t, x_t.ndim) * degraded + append_dims(sigma_t, x_t.ndim) * eps
        eps_bar = eps_from_x0(x_bar, self.prior(x_bar, t, **cond), alpha_t, sigma_t)
        guided = x0_from_eps(x_t, eps + self.scale * (eps - eps_bar), alpha_t, sigma_t)
        # at pure noise (alpha_t = 0) x_bar is x_t, so the guidance vanishes; x_hat stays
        return torch.where(append_dims(alpha_t == 0, x_t.ndim), x_hat, guided)
