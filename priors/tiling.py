r"""A fully convolutional prior on images of any size: one pass, or overlapping tiles.

A network trained on :math:`64 \times 64` crops is a function of a neighbourhood of each
pixel when it has no attention and no normalisation that pools over the image
(:class:`priors.UNet` with ``groups=-1``, per-pixel normalisation, or ``groups=0``, none), so
it applies unchanged to a larger image. Two things stand in the way: the network needs sides
divisible by its resolution factor :math:`2^{L-1}`, and memory grows with the image.
:class:`Tiled` handles both:

- **one pass** (``tile=None``, or an image no larger than a tile): the whole image at once;
- **tiles** (an image larger than ``tile``): the image is cut into tiles of side ``tile``
  that overlap by at least ``overlap`` pixels (the last tile of a row or column is aligned
  with the image's edge), each tile is denoised on its own, ``batch`` tiles at a time, and
  the results are blended by weights that rise linearly from the tile's inner edges over
  ``overlap`` pixels,

  .. math:: \hat x(p) = \frac{\sum_k w_k(p) \hat x_k(p)}{\sum_k w_k(p)},

  so that no pixel is taken from near the edge of a tile when a neighbouring tile sees it
  from further inside. Tiles touching the image's own border are not ramped there.

Cost: each tile is one row of a network evaluation (:mod:`priors.cost`), so a tiled image
counts as many evaluations per call as it has tiles.

Memory: without gradients, one call holds ``batch`` tiles' activations at a time. A
vector-Jacobian product through the denoiser (DPS, PiGDM) would keep every tile's
activations until the backward pass, so with ``recompute=True`` (the default) each batch of
tiles runs under activation checkpointing (``torch.utils.checkpoint``, non-reentrant): only
its input is kept, and its forward pass is recomputed, one batch at a time, when the
gradient is taken. That costs one more forward pass per backward pass, which the cost
accounting does not count again (:func:`priors.cost.paused`): it is the price of the memory
bound, not another evaluation.

In both modes the input is first padded by reflection (at the bottom and right) to the next
multiple of the factor, and the output cropped back, so both see the same image.

A tile's prediction differs from the one-pass prediction only through what lies beyond its
edge; the ramps put that difference where it is smallest, so no seam shows (the tests compare
the tiled and the one-pass denoiser on an image that fits in one pass, and the error along
tile borders with the error elsewhere).

Hu et al. ("Learning image priors through patch-based diffusion models for solving inverse
problems", NeurIPS 2024) instead combine patch scores over random shifts of a fixed patch
grid, one shift per step, so that seams move and average out over the sampling path; here
every step is already seamless, so no shift schedule is needed, and the result is the same
function of :math:`x_t` at every step (deterministic samplers stay deterministic).
"""

from __future__ import annotations

from typing import Any

import torch

from torch import Tensor
from torch.utils.checkpoint import checkpoint

import checks

from priors.conditions import per_row
from priors.cost import paused
from priors.denoiser import Denoiser, Wrapper

__all__ = ["Tiled", "tile_starts"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start positions of tiles of side ``tile`` covering ``length`` pixels with at least
    ``overlap`` pixels shared by neighbours; the last tile ends at ``length``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(size: int, overlap: int, left: bool, right: bool, dtype: torch.dtype) -> Tensor:
    u = torch.arange(size, dtype=dtype) + 0.5
    w = torch.ones(size, dtype=dtype)
    if left:
        w = torch.minimum(w, u / overlap)
    if right:
        w = torch.minimum(w, (size - u) / overlap)
    return w


class Tiled(Wrapper):
    r"""The wrapped prior on images of any size, in one pass or in blended tiles.

    Arguments:
        prior: A fully convolutional image prior, :math:`(B, C, H, W)`.
        tile: The tile side (a multiple of ``factor``); ``None`` for one pass whatever the
            size.
        overlap: The least overlap of neighbouring tiles and the length of the blending
            ramps, in pixels, at least 1 and less than ``tile / 2``.
        factor: The multiple the prior needs for :math:`H` and :math:`W`; by default the
            prior's ``factor`` attribute (:class:`priors.UNetDenoiser` has one), else 1.
        batch: Tiles denoised together (bounds the memory of one call).
        recompute: Checkpoint each batch of tiles when a gradient flows through it, so that
            a VJP keeps one batch's activations at a time (see the module).
    """

    def __init__(
        self,
        prior: Denoiser,
        tile: int | None = 256,
        overlap: int = 32,
        factor: int | None = None,
        batch: int = 16,
        recompute: bool = True,
    ) -> None:
        super().__init__(prior)
        self.factor = checks.integer(
            getattr(prior, "factor", 1) if factor is None else factor, "factor", low=1
        )
        if tile is not None:
            tile = checks.integer(tile, "tile", low=self.factor)
            if tile % self.factor:
                raise ValueError(f"tile must be a multiple of factor {self.factor}, got {tile}")
            overlap = checks.integer(overlap, "overlap", low=1)
            if not 2 * overlap < tile:
                raise ValueError(f"overlap must be less than tile / 2 = {tile / 2}, got {overlap}")
        self.tile, self.overlap = tile, overlap
        self.batch = checks.integer(batch, "batch", low=1)
        self.recompute = checks.flag(recompute, "recompute")

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        if x_t.ndim != 4:
            raise ValueError(f"x_t must be images (B, C, H, W), got shape {tuple(x_t.shape)}")
        h, w = x_t.shape[-2:]
        ph, pw = -h % self.factor, -w % self.factor
        if ph or pw:  # both modes see the same padded image
            mode = "reflect" if ph < h and pw < w else "replicate"
            x_t = torch.nn.functional.pad(x_t, (0, pw, 0, ph), mode=mode)
        return self._blend(x_t, t, cond)[..., :h, :w]

    def _blend(self, x_t: Tensor, t: Tensor, cond: dict[str, Any]) -> Tensor:
        b, _, h, w = x_t.shape
        if self.tile is None or (h <= self.tile and w <= self.tile):
            return self.prior(x_t, t, **cond)
        rows = tile_starts(h, self.tile, self.overlap)
        cols = tile_starts(w, self.tile, self.overlap)
        th, tw = min(self.tile, h), min(self.tile, w)
        places = [(n, i, j) for n in range(b) for i in rows for j in cols]
        t_rows = t.expand(b) if t.ndim == 0 else t
        weights = {  # one blending weight per tile position, shared by the rows
            (i, j): (
                _ramp(th, self.overlap, i > 0, i + th < h, x_t.dtype)[:, None]
                * _ramp(tw, self.overlap, j > 0, j + tw < w, x_t.dtype)
            ).to(x_t.device)
            for i in rows
            for j in cols
        }
        total = torch.zeros(h, w, dtype=x_t.dtype, device=x_t.device)
        for (i, j), weight in weights.items():
            total[i : i + th, j : j + tw] += weight
        out = torch.zeros_like(x_t)
        for start in range(0, len(places), self.batch):
            chunk = places[start : start + self.batch]
            index = torch.tensor([n for n, _, _ in chunk], device=x_t.device)
            tiles = torch.stack([x_t[n, :, i : i + th, j : j + tw] for n, i, j in chunk])
            tile_cond = per_row(cond, b, lambda v, index=index: v[index])
            denoised = self._denoise(tiles, t_rows[index], tile_cond)
            for (n, i, j), d in zip(chunk, denoised, strict=True):
                out[n, :, i : i + th, j : j + tw] += weights[i, j] * d
        return out / total

    def _denoise(self, tiles: Tensor, t: Tensor, cond: dict[str, Any]) -> Tensor:
        """One batch of tiles; checkpointed when a gradient will flow through it."""
        if not (self.recompute and torch.is_grad_enabled()):
            return self.prior(tiles, t, **cond)
        calls = []

        def run(tiles: Tensor, t: Tensor) -> Tensor:
            if calls:  # the recomputation in the backward pass: counted once already
                with paused():
                    return self.prior(tiles, t, **cond)
            calls.append(1)
            return self.prior(tiles, t, **cond)

        return checkpoint(run, tiles, t, use_reentrant=False)
