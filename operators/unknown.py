r"""Operators with unknowns: linear in the signal, with parameters to be estimated (blind
deblurring, unknown sensor gains or channel mixing).

The unknowns are the module's ``nn.Parameter`` s, so an estimation routine (an EM M-step,
a joint gradient step) updates them with any torch optimiser and then calls
:meth:`UnknownOperator.project`, which maps them back onto their constraint set in place.
Applying the operator never changes it; only explicit updates and :meth:`project` do.

References:
    | Blind DPS (Chung et al., 2023) https://arxiv.org/abs/2211.10656
    | Fast Diffusion EM (Laroche et al., 2024) https://arxiv.org/abs/2309.00287
"""

from __future__ import annotations

import abc
import copy

from collections.abc import Sequence
from typing import ClassVar

import torch

from torch import Tensor, nn

import checks

from operators.base import LinearOperator, Operator, check_image_shape, check_shape
from operators.blur import CircularBlur, check_kernel, circular_convolve
from operators.linalg import project_simplex

__all__ = ["BlindBlur", "ChannelGain", "ChannelMixing", "UnknownOperator"]


class UnknownOperator(Operator):
    """An operator whose parameters are unknowns with a constraint set."""

    @abc.abstractmethod
    def project(self) -> None:
        """Maps the unknowns onto their constraint set, in place."""

    def penalty(self) -> Tensor:
        r"""The quadratic form :math:`R` (:math:`P \times P`, positive semi-definite, over
        the unknowns flattened in parameter order) of the operator's default prior on its
        unknowns, :math:`\theta^\top R\, \theta`; zero by default (no preference)."""
        size = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return torch.zeros(size, size, dtype=torch.float64)

    def known(self) -> Operator:
        """The current estimate as a fixed operator: a copy whose unknowns no longer
        require gradients and no longer follow later updates (subclasses return a
        structured operator where one exists, e.g. a blur with its SVD)."""
        frozen = copy.deepcopy(self)
        frozen.requires_grad_(False)
        return frozen


class BlindBlur(UnknownOperator, LinearOperator):
    r"""Circular blur :math:`y = k \circledast x` with an unknown kernel :math:`k`,
    constrained to the simplex (non-negative, sums to 1).

    Arguments:
        in_shape: The image shape :math:`(C, H, W)`.
        kernel_size: The (odd) kernel size; the kernel starts as the identity (a centred
            Dirac). Ignored when ``kernel`` is given.
        kernel: An initial kernel :math:`(h, w)` or :math:`(C, h, w)`, checked as a kernel.
        centring: The weight of the centring term in :meth:`penalty`, relative to
            smoothness.
    """

    #: torch's FFT has no float16 / bfloat16 kernels on the CPU.
    supports_half: ClassVar[bool] = False

    def __init__(
        self,
        in_shape: Sequence[int],
        kernel_size: int = 5,
        kernel: Tensor | None = None,
        centring: float = 1.0,
    ) -> None:
        super().__init__(check_image_shape(in_shape), in_shape)
        self.centring = checks.number(centring, "centring", low=0)
        if kernel is None:
            kernel_size = checks.integer(kernel_size, "kernel_size", low=1)
            if kernel_size % 2 == 0:
                raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
            kernel = torch.zeros(kernel_size, kernel_size, dtype=torch.float64)
            kernel[kernel_size // 2, kernel_size // 2] = 1
        self.kernel = nn.Parameter(check_kernel(kernel, self.in_shape))

    def apply(self, x: Tensor) -> Tensor:
        return circular_convolve(x, self.kernel)

    def apply_adjoint(self, y: Tensor) -> Tensor:
        return circular_convolve(y, self.kernel, adjoint=True)

    @torch.no_grad()
    def project(self) -> None:
        flat = self.kernel.flatten(-2)
        self.kernel.copy_(project_simplex(flat).view_as(self.kernel))

    def penalty(self) -> Tensor:
        r"""Smoothness plus centring of the kernel, per channel:
        :math:`\sum (k_{i+1,j} - k_{i,j})^2 + (k_{i,j+1} - k_{i,j})^2
        + c\,[(\sum_{ij} i\, k_{ij})^2 + (\sum_{ij} j\, k_{ij})^2]` with offsets
        :math:`i, j` from the kernel's centre and :math:`c` = ``centring``. The centring
        term picks one kernel among its translates: a blur and a shifted image explain the
        data as well as the centred blur and the image, and without it the estimate drifts.
        """
        *c, h, w = self.kernel.shape
        dy = torch.eye(h, dtype=torch.float64).diff(dim=0)  # (h - 1, h)
        dx = torch.eye(w, dtype=torch.float64).diff(dim=0)
        one_channel = torch.kron(dy.T @ dy, torch.eye(w, dtype=torch.float64)) + torch.kron(
            torch.eye(h, dtype=torch.float64), dx.T @ dx
        )
        i = (torch.arange(h, dtype=torch.float64) - h // 2)[:, None].expand(h, w).flatten()
        j = (torch.arange(w, dtype=torch.float64) - w // 2)[None, :].expand(h, w).flatten()
        one_channel = one_channel + self.centring * (torch.outer(i, i) + torch.outer(j, j))
        return torch.block_diag(*[one_channel] * (c[0] if c else 1))

    def known(self) -> CircularBlur:
        """The current estimate as a known blur (with its closed-form SVD)."""
        return CircularBlur(self.kernel.detach().clone(), self.in_shape).to(self.kernel.device)


class ChannelGain(UnknownOperator, LinearOperator):
    r"""Unknown per-channel gains :math:`y_c = g_c x_c`, constrained to :math:`g \geq 0`.

    Arguments:
        in_shape: The signal shape :math:`(C, \dots)`.
        gain: Initial gains :math:`(C,)`, non-negative; 1 by default.
    """

    def __init__(self, in_shape: Sequence[int], gain: Tensor | None = None) -> None:
        super().__init__(in_shape, in_shape)
        c = self.in_shape[0]
        gain = torch.ones(c) if gain is None else torch.as_tensor(gain).detach()
        if gain.is_complex():
            raise TypeError(f"gain must be real, got {gain.dtype}")
        gain = gain.to(torch.float64).clone()
        if gain.shape != (c,) or not bool(torch.isfinite(gain).all()):
            raise ValueError(f"gain must be {c} finite numbers, got {tuple(gain.shape)}")
        if float(gain.min()) < 0:
            raise ValueError("gain has negative entries")
        self.gain = nn.Parameter(gain)

    def _gain(self, x: Tensor) -> Tensor:
        return self.gain.to(x.dtype).view(-1, *([1] * (len(self.in_shape) - 1)))

    def apply(self, x: Tensor) -> Tensor:
        return self._gain(x) * x

    def apply_adjoint(self, y: Tensor) -> Tensor:
        return self._gain(y) * y

    def pinv(self, y: Tensor) -> Tensor:
        """Closed form: :math:`y_c / g_c` where :math:`g_c \\neq 0`, else 0."""
        check_shape(y, self.out_shape, "y")
        g = self._gain(y)
        return torch.where(g != 0, y / g.where(g != 0, 1), 0)

    @torch.no_grad()
    def project(self) -> None:
        self.gain.clamp_(min=0)


class ChannelMixing(UnknownOperator, LinearOperator):
    r"""Unknown channel mixing :math:`y_o = \sum_i M_{oi} x_i` (per pixel), each row of
    :math:`M` constrained to the simplex (each output is a convex mixture of the inputs,
    like a sensor's spectral response).

    Arguments:
        in_shape: The signal shape :math:`(C, H, W)`.
        out_channels: The number of output channels; ``in_shape[0]`` by default.
        matrix: The initial :math:`M`, rows on the simplex; the identity (or the uniform
            mixture when not square) by default.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_channels: int | None = None,
        matrix: Tensor | None = None,
    ) -> None:
        c, h, w = check_image_shape(in_shape)
        out = c if out_channels is None else checks.integer(out_channels, "out_channels", low=1)
        super().__init__((c, h, w), (out, h, w))
        if matrix is None:
            matrix = torch.eye(c) if out == c else torch.full((out, c), 1 / c)
        matrix = torch.as_tensor(matrix).detach()
        if matrix.is_complex():
            raise TypeError(f"matrix must be real, got {matrix.dtype}")
        matrix = matrix.to(torch.float64).clone()
        if matrix.shape != (out, c) or not bool(torch.isfinite(matrix).all()):
            raise ValueError(
                f"matrix must be finite of shape {(out, c)}, got {tuple(matrix.shape)}"
            )
        if float(matrix.min()) < 0 or not torch.allclose(
            matrix.sum(1), torch.ones(out, dtype=torch.float64), atol=1e-6, rtol=0
        ):
            raise ValueError("each row of the mixing matrix must be non-negative and sum to 1")
        self.matrix = nn.Parameter(matrix)

    def apply(self, x: Tensor) -> Tensor:
        return torch.einsum("oi,bi...->bo...", self.matrix.to(x.dtype), x)

    def apply_adjoint(self, y: Tensor) -> Tensor:
        return torch.einsum("oi,bo...->bi...", self.matrix.to(y.dtype), y)

    @torch.no_grad()
    def project(self) -> None:
        self.matrix.copy_(project_simplex(self.matrix))
