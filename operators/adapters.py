r"""deepinv physics as our operators (:class:`DeepinvOperator`) and ours as deepinv physics
(:func:`as_deepinv`), with the data-range conversion done here and nowhere else.

Our images live in :math:`[-1, 1]`, deepinv's in :math:`[0, 1]`:
:math:`x = 2 x_{01} - 1`. A *linear* map does not care which range it is applied in, so the
operator itself is shared and only measurements convert: a deepinv measurement
:math:`y_{01} = A x_{01} + n_{01}` is the measurement
:math:`y = A x + n = 2 y_{01} - A\mathbf{1}` of ours, with noise :math:`n = 2 n_{01}`
(:math:`\sigma_y = 2 \sigma_{01}`). A *nonlinear* physics is applied to the converted image,
:math:`A(x) = A_{01}((x + 1) / 2)`, and its measurements are in the physics' own units, so they
do not convert. :func:`measurement_from_deepinv` and :func:`measurement_to_deepinv` carry out
these rules for any operator.

:class:`DeepinvOperator` returns the strongest type the physics supports: an
:class:`~operators.base.SVDOperator` when it is a ``DecomposablePhysics`` whose :math:`V` is
a real orthonormal basis of the whole input space (``Inpainting``, ``Denoising``), a
:class:`~operators.base.LinearOperator` for other linear physics (``Blur``,
``Downsampling``; also ``BlurFFT`` and ``Decolorize``, whose decompositions are redundant or
thin: use :class:`~operators.blur.CircularBlur` and :class:`~operators.blocks.Colorization`
for a full SVD), and an :class:`~operators.base.Operator` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from deepinv.physics import (
    DecomposablePhysics,
    LinearPhysics,
    Physics,
)
from deepinv.physics import (
    GaussianNoise as DeepinvGaussianNoise,
)
from torch import Tensor
from typing_extensions import Self

import checks

from operators.base import LinearOperator, Operator, SVDOperator, check_shape, check_sizes

__all__ = [
    "DeepinvLinearOperator",
    "DeepinvOperator",
    "DeepinvSVDOperator",
    "as_deepinv",
    "measurement_from_deepinv",
    "measurement_to_deepinv",
]


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    """The widest floating dtype among the module's parameters and buffers (deepinv's
    bookkeeping buffer ``_device_holder`` aside); torch's default if there is none."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    dtypes = [
        t.dtype
        for name, t in tensors
        if t is not None and t.is_floating_point() and not name.endswith("_device_holder")
    ]
    return max(dtypes, key=lambda d: torch.finfo(d).bits, default=torch.get_default_dtype())


def _ones(op: Operator, like: Tensor) -> Tensor:
    return torch.ones(1, *op.in_shape, dtype=like.dtype, device=like.device)


def measurement_from_deepinv(op: Operator, y: Tensor) -> Tensor:
    r"""A measurement made in deepinv's range (images in :math:`[0, 1]`) as one of ``op``'s:
    :math:`2 y - A\mathbf{1}` for a linear operator, unchanged otherwise."""
    if isinstance(op, LinearOperator):
        return 2 * y - op(_ones(op, y))
    return y


def measurement_to_deepinv(op: Operator, y: Tensor) -> Tensor:
    r"""The inverse of :func:`measurement_from_deepinv`: :math:`(y + A\mathbf{1}) / 2` for a
    linear operator, unchanged otherwise."""
    if isinstance(op, LinearOperator):
        return (y + op(_ones(op, y))) / 2
    return y


def _full_orthonormal_basis(physics: DecomposablePhysics, in_shape: tuple[int, ...]) -> bool:
    """Whether the physics' V is a real orthonormal basis of the whole input space."""
    dtype = _dtype_of(physics)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *in_shape, generator=g, dtype=dtype)
    z = physics.V_adjoint(x)
    if z.is_complex():
        return False
    w = torch.randn(z.shape, generator=g, dtype=dtype)
    mask = torch.as_tensor(physics.mask)
    if mask.is_complex():
        return False
    return bool(
        torch.allclose(physics.V(z), x, atol=tol, rtol=tol)
        and torch.allclose(physics.V_adjoint(physics.V(w)), w, atol=tol, rtol=tol)
    )


class DeepinvOperator(Operator):
    r"""Any deepinv ``Physics`` as an operator (see the module for the type returned and the
    data ranges). Only ``physics.A`` (and its adjoint and decomposition) is used: the
    physics' own noise model is not, noise is added by our noise models.

    Arguments:
        physics: The deepinv physics. It is applied in the dtype of its floating buffers
            (inputs are cast to it and results cast back to the input's dtype).
        in_shape: The per-sample input shape :math:`(C, H, W)` (deepinv physics rarely
            know it); the output shape is found by applying the physics once.
    """

    def __new__(cls, physics: Physics, in_shape: Sequence[int]) -> Self:
        kind = cls
        if cls is DeepinvOperator and isinstance(physics, LinearPhysics):
            full = isinstance(physics, DecomposablePhysics) and _full_orthonormal_basis(
                physics, check_sizes(in_shape, "in_shape")
            )
            kind = DeepinvSVDOperator if full else DeepinvLinearOperator
        return super().__new__(kind)

    def __init__(self, physics: Physics, in_shape: Sequence[int]) -> None:
        if not isinstance(physics, Physics):
            raise TypeError(f"physics must be a deepinv Physics, got {type(physics).__name__}")
        in_shape = check_sizes(in_shape, "in_shape")
        with torch.no_grad():
            probe = torch.zeros(1, *in_shape, dtype=_dtype_of(physics))
            out = physics.A(probe)
        if not isinstance(out, Tensor):
            raise TypeError(f"{type(physics).__name__}.A must return a tensor")
        super().__init__(in_shape, tuple(out.shape[1:]))
        self.physics = physics

    def _run(self, method: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
        """``method`` applied in the physics' dtype, the result returned in ``t``'s."""
        out = method(t.to(_dtype_of(self.physics)))
        return out.to(t.dtype) if out.is_floating_point() else out

    def apply(self, x: Tensor) -> Tensor:
        return self._run(self.physics.A, (x + 1) / 2)


class DeepinvLinearOperator(DeepinvOperator, LinearOperator):
    """A linear deepinv physics (built by :class:`DeepinvOperator`); the pseudo-inverse is the
    physics' closed form when it is decomposable, conjugate gradients otherwise."""

    def apply(self, x: Tensor) -> Tensor:
        return self._run(self.physics.A, x)

    def apply_adjoint(self, y: Tensor) -> Tensor:
        return self._run(self.physics.A_adjoint, y)

    def pinv(self, y: Tensor) -> Tensor:
        if isinstance(self.physics, DecomposablePhysics):
            check_shape(y, self.out_shape, "y")
            return self._run(self.physics.A_dagger, y)
        return LinearOperator.pinv(self, y)


class DeepinvSVDOperator(DeepinvLinearOperator, SVDOperator):
    """A deepinv ``DecomposablePhysics`` with a full real orthonormal :math:`V` (built by
    :class:`DeepinvOperator`)."""

    @property
    def singulars(self) -> Tensor:
        return torch.as_tensor(self.physics.mask)

    def U(self, z: Tensor) -> Tensor:
        return self._run(self.physics.U, z)

    def Ut(self, y: Tensor) -> Tensor:
        return self._run(self.physics.U_adjoint, y)

    def V(self, z: Tensor) -> Tensor:
        return self._run(self.physics.V, z)

    def Vt(self, x: Tensor) -> Tensor:
        return self._run(self.physics.V_adjoint, x)

    def pinv(self, y: Tensor) -> Tensor:
        return SVDOperator.pinv(self, y)


def as_deepinv(op: Operator, sigma: float = 0.0, dtype: torch.dtype | None = None) -> Physics:
    r"""``op`` as a deepinv physics acting on images in :math:`[0, 1]`, so that deepinv's
    algorithms run on our operators.

    An :class:`~operators.base.SVDOperator` becomes a ``DecomposablePhysics`` (closed-form
    ``A_dagger`` and ``prox_l2``, usable by deepinv's DDRM), a
    :class:`~operators.base.LinearOperator` a ``LinearPhysics`` with our adjoint, any other
    operator a ``Physics`` applied to :math:`2 x_{01} - 1`.

    Arguments:
        op: The operator.
        sigma: Our Gaussian noise level :math:`\sigma_y`; the physics gets deepinv's
            equivalent (:math:`\sigma_y / 2` for linear operators, see the module).
        dtype: The dtype of the singular values deepinv multiplies by (its algorithms run
            in float32); torch's default dtype by default.
    """
    if not isinstance(op, Operator):
        raise TypeError(f"op must be an Operator, got {type(op).__name__}")
    sigma = checks.number(sigma, "sigma", low=0)
    linear = isinstance(op, LinearOperator)
    noise = DeepinvGaussianNoise(sigma=sigma / 2 if linear else sigma)
    if isinstance(op, SVDOperator):
        dtype = torch.get_default_dtype() if dtype is None else dtype
        spectral = op.Vt(torch.zeros(1, *op.in_shape, dtype=torch.float64)).shape[1:]
        mask = op.singulars.expand(spectral)[None].to(dtype).clone()
        return DecomposablePhysics(
            U=op.U,
            U_adjoint=op.Ut,
            V=op.V,
            V_adjoint=op.Vt,
            mask=mask,
            img_size=op.in_shape,
            noise_model=noise,
        )
    if linear:
        return LinearPhysics(
            A=op.forward, A_adjoint=op.adjoint, img_size=op.in_shape, noise_model=noise
        )
    return Physics(A=lambda x: op(2 * x - 1), noise_model=noise)
