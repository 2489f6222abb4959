r"""Block projections: each block of :math:`n` input entries is measured by one weighted sum
:math:`y_b = \langle w, x_b \rangle`.

Average-pooling super-resolution (blocks of :math:`f \times f` pixels, :math:`w = 1 / f^2`)
and colorization (blocks of channels, :math:`w` the luma weights) are of this form. Per block
the SVD is :math:`s = \lVert w \rVert` with right singular vector :math:`w / \lVert w \rVert`;
the remaining right singular vectors complete it to the orthonormal basis given by the
Householder reflection :math:`Q = I - 2 v v^\top / v^\top v`, :math:`v = e_1 - w / \lVert w
\rVert`, which is symmetric, orthogonal and has :math:`w / \lVert w \rVert` as its first
row. The spectral space is :math:`(B, *\text{blocks}, n)` with singular values
:math:`(\lVert w \rVert, 0, \dots, 0)`.

References:
    | Denoising Diffusion Restoration Models (Kawar et al., 2022), Appendix (SVD of the
    | super-resolution and colorization operators) https://arxiv.org/abs/2201.11793
"""

from __future__ import annotations

import abc

from collections.abc import Sequence

import torch

from torch import Tensor

import checks

from operators.base import SVDOperator, check_image_shape

__all__ = ["AveragePoolSR", "BlockProjection", "Colorization"]


class BlockProjection(SVDOperator):
    r"""Abstract block projection; subclasses say how inputs split into blocks.

    Arguments:
        in_shape: The input's shape.
        out_shape: The measurement's shape (one entry per block).
        weights: The block weights :math:`w`, with shape :math:`(n,)`, not all zero.
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], weights: Tensor) -> None:
        super().__init__(in_shape, out_shape)
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.ndim != 1 or not bool(torch.isfinite(w).all()) or float(w.norm()) == 0:
            raise ValueError("weights must be a finite non-zero vector")
        v = torch.zeros_like(w)
        v[0] = 1.0
        v = v - w / w.norm()
        q = torch.eye(w.numel(), dtype=torch.float64)
        if float(v.norm()) > 0:
            q = q - 2 * torch.outer(v, v) / (v @ v)
        s = torch.zeros_like(w)
        s[0] = w.norm()
        self.register_buffer("weights", w)
        self.register_buffer("basis", q)
        self.register_buffer("s", s)

    @abc.abstractmethod
    def to_blocks(self, x: Tensor) -> Tensor:
        """Inputs ``(B, *in_shape)`` to blocks ``(B, *out_shape, n)``."""

    @abc.abstractmethod
    def from_blocks(self, blocks: Tensor) -> Tensor:
        """Blocks ``(B, *out_shape, n)`` back to inputs ``(B, *in_shape)``."""

    @property
    def singulars(self) -> Tensor:
        return self.s

    def apply(self, x: Tensor) -> Tensor:
        return self.to_blocks(x) @ self.weights.to(x.dtype)

    def apply_adjoint(self, y: Tensor) -> Tensor:
        return self.from_blocks(y[..., None] * self.weights.to(y.dtype))

    def U(self, z: Tensor) -> Tensor:
        return z[..., 0]

    def Ut(self, y: Tensor) -> Tensor:
        z = y.new_zeros(*y.shape, self.weights.numel())
        z[..., 0] = y
        return z

    def V(self, z: Tensor) -> Tensor:
        return self.from_blocks(z @ self.basis.to(z.dtype))

    def Vt(self, x: Tensor) -> Tensor:
        return self.to_blocks(x) @ self.basis.to(x.dtype).T


class AveragePoolSR(BlockProjection):
    r"""Super-resolution by average pooling: each :math:`f \times f` block of pixels is
    replaced by its mean, :math:`(C, H, W) \to (C, H / f, W / f)`.

    Arguments:
        in_shape: The high-resolution shape :math:`(C, H, W)`; ``factor`` must divide
            :math:`H` and :math:`W`.
        factor: The downsampling factor :math:`f` (2 and 4 are the usual tasks).
    """

    def __init__(self, in_shape: Sequence[int], factor: int) -> None:
        factor = checks.integer(factor, "factor", low=1)
        c, h, w = check_image_shape(in_shape)
        if h % factor or w % factor:
            raise ValueError(f"the SR factor {factor} does not divide the image size {h}x{w}")
        super().__init__(
            in_shape, (c, h // factor, w // factor), torch.full((factor**2,), 1.0 / factor**2)
        )
        self.factor = factor

    def to_blocks(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        f = self.factor
        blocks = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 2, 4, 3, 5)
        return blocks.reshape(b, c, h // f, w // f, f * f)

    def from_blocks(self, blocks: Tensor) -> Tensor:
        b, c, h, w, _ = blocks.shape
        f = self.factor
        x = blocks.reshape(b, c, h, w, f, f).permute(0, 1, 2, 4, 3, 5)
        return x.reshape(b, c, h * f, w * f)


class Colorization(BlockProjection):
    r"""Colorization: a :math:`C`-channel image is seen through the grayscale
    :math:`y = \sum_c w_c x_c`, :math:`(C, H, W) \to (1, H, W)`.

    Arguments:
        in_shape: The colour image's shape :math:`(C, H, W)`.
        weights: The channel weights; default the Rec. 601 luma weights (0.299, 0.587, 0.114)
            for 3 channels, the mean otherwise.
    """

    def __init__(self, in_shape: Sequence[int], weights: Sequence[float] | None = None) -> None:
        c, h, w = check_image_shape(in_shape)
        if weights is None:
            weights = (0.299, 0.587, 0.114) if c == 3 else (1.0 / c,) * c
        if isinstance(weights, Tensor):
            weights = weights.tolist()
        if len(weights) != c:
            raise ValueError(f"need one weight per channel ({c}), got {len(weights)}")
        weights = [checks.number(v, "weights") for v in weights]
        super().__init__((c, h, w), (1, h, w), torch.tensor(weights))

    def to_blocks(self, x: Tensor) -> Tensor:
        return x.movedim(1, -1)[:, None]

    def from_blocks(self, blocks: Tensor) -> Tensor:
        return blocks[:, 0].movedim(-1, 1)
