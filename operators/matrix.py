r"""A dense matrix as an :class:`~operators.base.SVDOperator`.

:math:`A \in \mathbb{R}^{d_y \times d_x}` acts on rows :math:`x \in \mathbb{R}^{d_x}`. Its full
SVD :math:`A = U_A \operatorname{diag}(s) V_A^\top` is computed once in float64; the spectral
space is :math:`\mathbb{R}^{d_x}` with the :math:`r = \min(d_y, d_x)` singular values first and
zeros after.
"""

from __future__ import annotations

import torch

from torch import Tensor

from operators.base import SVDOperator

__all__ = ["MatrixOperator"]


class MatrixOperator(SVDOperator):
    r"""The linear map :math:`x \mapsto A x` on inputs of shape :math:`(B, d_x)`.

    Arguments:
        A: The matrix, with shape :math:`(d_y, d_x)`, finite.
    """

    def __init__(self, A: Tensor) -> None:
        A = torch.as_tensor(A)
        if A.is_complex() or A.dtype == torch.bool:
            raise TypeError(f"A must be a real matrix, got {A.dtype}")
        if A.ndim != 2 or A.numel() == 0:
            raise ValueError(f"A must be a non-empty matrix (d_y, d_x), got {tuple(A.shape)}")
        if not bool(torch.isfinite(A).all()):
            raise ValueError("A contains NaN or Inf")
        d_y, d_x = A.shape
        super().__init__((d_x,), (d_y,))
        u, s, vh = torch.linalg.svd(A.to(torch.float64), full_matrices=True)
        r = min(d_y, d_x)
        self.register_buffer("matrix", A.to(torch.float64))
        self.register_buffer("u", u[:, :r].contiguous())
        self.register_buffer("vh", vh)
        self.register_buffer("s", torch.cat([s, s.new_zeros(d_x - r)]))

    @property
    def singulars(self) -> Tensor:
        return self.s

    def apply(self, x: Tensor) -> Tensor:
        return x @ self.matrix.to(x.dtype).T

    def apply_adjoint(self, y: Tensor) -> Tensor:
        return y @ self.matrix.to(y.dtype)

    def U(self, z: Tensor) -> Tensor:
        return z[:, : self.u.shape[1]] @ self.u.to(z.dtype).T

    def Ut(self, y: Tensor) -> Tensor:
        z = y @ self.u.to(y.dtype)
        return torch.cat([z, z.new_zeros(z.shape[0], self.in_shape[0] - z.shape[1])], dim=1)

    def V(self, z: Tensor) -> Tensor:
        return z @ self.vh.to(z.dtype)

    def Vt(self, x: Tensor) -> Tensor:
        return x @ self.vh.to(x.dtype).T
