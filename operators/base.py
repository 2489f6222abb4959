r"""Forward operators :math:`x \mapsto A(x)`.

Capabilities grow with the type, and guidance rules state the type they need:

- :class:`Operator`: any map, with a vector-Jacobian product :math:`J_A(x)^\top v` by autograd
  (or an error for black boxes, ``differentiable = False``).
- :class:`LinearOperator`: an explicit adjoint :math:`A^\top`, and the pseudo-inverse
  :math:`A^+ y` by conjugate gradients on the normal equations.
- :class:`SVDOperator`: :math:`A = U \operatorname{diag}(s) V^\top` with orthonormal
  :math:`U, V`, hence closed-form forward, adjoint and pseudo-inverse.

In an :class:`SVDOperator` the *spectral* space is the output of :math:`V^\top`, of
dimension :math:`d_x`; the singular values ``singulars`` broadcast against it and are 0 on
unobserved directions. :math:`U` maps the spectral space onto the measurement space (it
reads only the observed coordinates) and :math:`U^\top` embeds measurements into it, so
:math:`U^\top U` projects onto the observed coordinates and :math:`U U^\top` onto the range
of :math:`A` (the identity when :math:`A` has full row rank).

Operators are pure: applying one never changes it. Inputs are checked against the
operator's per-sample shapes ``in_shape`` and ``out_shape``, and by the package's dtype policy
(:mod:`checks`): real floating tensors only, float16 and bfloat16 where the operator says it
supports them (``supports_half``); integer, boolean and complex inputs and tensors on the meta
device are refused. A finite input that gives a NaN or an infinity (an overflow) raises a
``FloatingPointError`` naming the operator instead of passing the NaN on.
"""

from __future__ import annotations

import abc

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch

from torch import Tensor, nn

import checks

from operators.linalg import cg

__all__ = [
    "LinearOperator",
    "NotDifferentiableError",
    "Operator",
    "SVDOperator",
    "UnsupportedOperator",
    "check_image_shape",
    "check_shape",
    "check_sizes",
]


class UnsupportedOperator(TypeError):
    """Raised when a method is given an operator that lacks what it needs (linearity, an
    SVD, derivatives): the method does not apply, as opposed to a wrong argument."""


class NotDifferentiableError(UnsupportedOperator):
    """Raised when a derivative is asked of an operator that has none."""


def check_shape(x: Tensor, shape: tuple[int, ...], name: str, *, half: bool = True) -> None:
    """Checks that ``x`` is a finite, non-empty batch of real floating values of per-sample
    shape ``shape`` (float16 and bfloat16 refused unless ``half``)."""
    checks.real_tensor(x, name, half=half)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"{name} must have shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0)")
    checks.finite(x, name)


def check_sizes(shape: Sequence[int], name: str) -> tuple[int, ...]:
    """A per-sample shape: a sequence of integers >= 1 (empty: one number per sample)."""
    if isinstance(shape, str | Tensor) or not isinstance(shape, Sequence):
        raise TypeError(f"{name} must be a sequence of sizes, got {shape!r}")
    return tuple(checks.integer(n, name, low=1) for n in shape)


def check_image_shape(shape: Sequence[int], name: str = "in_shape") -> tuple[int, int, int]:
    """An image shape :math:`(C, H, W)` of integers >= 1."""
    sizes = check_sizes(shape, name)
    if len(sizes) != 3:
        raise ValueError(f"{name} must be an image shape (C, H, W), got {tuple(shape)}")
    return sizes


class Operator(nn.Module, abc.ABC):
    r"""A forward operator :math:`A` from :math:`(B, *in\_shape)` to :math:`(B, *out\_shape)`.

    Subclasses implement :meth:`apply`; calling the operator checks the input's shape and
    values first.

    Arguments:
        in_shape: The shape of one input, e.g. :math:`(C, H, W)`.
        out_shape: The shape of one measurement.
    """

    #: False for black boxes: :meth:`vjp` then raises :class:`NotDifferentiableError`.
    differentiable: ClassVar[bool] = True
    #: Whether float16 and bfloat16 inputs are supported (else refused with an error).
    supports_half: ClassVar[bool] = True

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        super().__init__()
        self.in_shape = check_sizes(in_shape, "in_shape")
        self.out_shape = check_sizes(out_shape, "out_shape")

    @abc.abstractmethod
    def apply(self, x: Tensor) -> Tensor:
        """:math:`A(x)` for a checked input of shape :math:`(B, *in\\_shape)`."""

    def check_input(self, x: Tensor, name: str = "x") -> None:
        """Checks an input (shape, dtype, values) as :meth:`forward` does."""
        check_shape(x, self.in_shape, name, half=self.supports_half)

    def check_output(self, out: Tensor, what: str) -> Tensor:
        """Raises a ``FloatingPointError`` naming the operator when a result computed from
        a finite input is not finite (an overflow)."""
        return checks.finite(
            out, f"{type(self).__name__}'s {what} of a finite input", FloatingPointError
        )

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`A(x)`, with shape :math:`(B, *out\_shape)`."""
        self.check_input(x)
        return self.check_output(self.apply(x), "output")

    def vjp(self, x: Tensor, v: Tensor) -> Tensor:
        r"""The vector-Jacobian product :math:`J_A(x)^\top v`, with the shape of ``x``."""
        self._check_differentiable()
        check_shape(v, self.out_shape, "v")
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self(x), x, v)
        return g

    def linearize(self, x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        r""":math:`A(x)` and the map :math:`v \mapsto J_A(x)^\top v` from one forward pass
        (the map may be called once): for an operator whose forward pass is expensive (a
        decoder, a simulator written in torch), a residual and its VJP cost one pass instead of
        the two of ``op(x)`` then :meth:`vjp`."""
        self._check_differentiable()
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            out = self(x)

        def pullback(v: Tensor) -> Tensor:
            check_shape(v, self.out_shape, "v")
            (g,) = torch.autograd.grad(out, x, v)
            return g

        return out.detach(), pullback

    def _check_differentiable(self) -> None:
        if not self.differentiable:
            raise NotDifferentiableError(
                f"{type(self).__name__} is not differentiable: use a derivative-free guidance "
                "rule (ensemble Kalman, zeroth-order smoothing or a learned surrogate "
                "likelihood) instead of one that needs vector-Jacobian products"
            )


class LinearOperator(Operator):
    r"""A linear operator with an explicit adjoint.

    Subclasses implement :meth:`apply` and :meth:`apply_adjoint`; :meth:`pinv` defaults to
    ``pinv_iterations`` steps of conjugate gradients on :math:`A^\top A x = A^\top y` from 0,
    which converge to :math:`A^+ y`.
    """

    #: Conjugate-gradient iterations of the default :meth:`pinv`.
    pinv_iterations: ClassVar[int] = 200

    @abc.abstractmethod
    def apply_adjoint(self, y: Tensor) -> Tensor:
        r""":math:`A^\top y` for a checked measurement of shape :math:`(B, *out\_shape)`."""

    def adjoint(self, y: Tensor) -> Tensor:
        r""":math:`A^\top y`, with shape :math:`(B, *in\_shape)`."""
        check_shape(y, self.out_shape, "y", half=self.supports_half)
        return self.check_output(self.apply_adjoint(y), "adjoint")

    def vjp(self, x: Tensor, v: Tensor) -> Tensor:
        r""":math:`J_A(x)^\top v = A^\top v` for a linear operator."""
        self.check_input(x)
        return self.adjoint(v)

    def linearize(self, x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        r""":math:`A x` and the adjoint :math:`v \mapsto A^\top v` (no graph is kept)."""
        return self(x), self.adjoint

    def gram(self, x: Tensor) -> Tensor:
        r""":math:`A^\top A x`."""
        return self.apply_adjoint(self.apply(x))

    def pinv(self, y: Tensor) -> Tensor:
        r"""The pseudo-inverse :math:`A^+ y`, with shape :math:`(B, *in\_shape)`."""
        check_shape(y, self.out_shape, "y", half=self.supports_half)
        x = cg(self.gram, self.apply_adjoint(y), iterations=self.pinv_iterations)
        return self.check_output(x, "pseudo-inverse")

    def ridge(self, y: Tensor, x0: Tensor, rho: float, iterations: int | None = None) -> Tensor:
        r"""The regularised least-squares solution

        .. math:: \arg\min_x \lVert y - A x \rVert^2 + \rho \lVert x - x_0 \rVert^2
            = (A^\top A + \rho I)^{-1} (A^\top y + \rho x_0),

        the proximal step of DiffPIR and the likelihood step of PnP-DM; at :math:`\rho = 0`
        the point nearest :math:`x_0` that fits :math:`y` best, :math:`x_0 + A^+(y - A x_0)`.
        Here by ``iterations`` conjugate-gradient steps (:attr:`pinv_iterations` if None);
        exact on an :class:`SVDOperator`.

        Arguments:
            y: The measurement, :math:`(B, *out\_shape)` or one row for all.
            x0: The centre, :math:`(B, *in\_shape)`.
            rho: :math:`\rho \geq 0`.
            iterations: Conjugate-gradient iterations.
        """
        rho = checks.number(rho, "rho", low=0)
        self.check_input(x0, "x0")
        y = y.expand(x0.shape[0], *self.out_shape)
        if rho == 0:
            return x0 + self.pinv(y - self.apply(x0))
        iterations = self.pinv_iterations if iterations is None else iterations
        iterations = checks.integer(iterations, "iterations", low=1)
        rhs = self.adjoint(y) + rho * x0
        x = cg(lambda v: self.gram(v) + rho * v, rhs, iterations=iterations)
        return self.check_output(x, "ridge solution")


class SVDOperator(LinearOperator):
    r"""A linear operator given by its singular value decomposition
    :math:`A = U \operatorname{diag}(s) V^\top` (see the module docstring for the spectral
    space). Subclasses implement :meth:`U`, :meth:`Ut`, :meth:`V`, :meth:`Vt` and the
    property :attr:`singulars`.
    """

    #: Singular values at or below this in magnitude are unobserved (:meth:`observed`).
    rcond: ClassVar[float] = 1e-6

    @property
    @abc.abstractmethod
    def singulars(self) -> Tensor:
        """The singular values, broadcastable against the spectral space (0 = unobserved)."""

    @abc.abstractmethod
    def U(self, z: Tensor) -> Tensor:
        """Spectral coordinates to measurements (reads the observed coordinates only)."""

    @abc.abstractmethod
    def Ut(self, y: Tensor) -> Tensor:
        """Measurements to spectral coordinates (0 on unobserved ones)."""

    @abc.abstractmethod
    def V(self, z: Tensor) -> Tensor:
        """Spectral coordinates to the input space (orthonormal)."""

    @abc.abstractmethod
    def Vt(self, x: Tensor) -> Tensor:
        """The input space to spectral coordinates (orthonormal)."""

    def observed(self) -> Tensor:
        """Which spectral coordinates the measurement sees: singular values above
        :attr:`rcond` in magnitude, a boolean tensor shaped like :attr:`singulars`. The one
        rule :meth:`pinv` and every spectral method (DDRM, DiffPIR, PiGDM, DDNM+, MCGdiff,
        the replacement check) use."""
        return self.singulars.abs() > self.rcond

    def scale(self, z: Tensor, power: int = 1) -> Tensor:
        r""":math:`s^{power} z` in the spectral space, in ``z``'s dtype and device (the
        singular values are stored in float64 and must not promote the data)."""
        return self.singulars.to(z.device, z.dtype) ** power * z

    def apply(self, x: Tensor) -> Tensor:
        return self.U(self.scale(self.Vt(x)))

    def apply_adjoint(self, y: Tensor) -> Tensor:
        return self.V(self.scale(self.Ut(y)))

    def gram(self, x: Tensor) -> Tensor:
        return self.V(self.scale(self.Vt(x), power=2))

    def pinv(self, y: Tensor) -> Tensor:
        check_shape(y, self.out_shape, "y", half=self.supports_half)
        z = self.Ut(y)
        s = self.singulars.to(z.device, z.dtype)
        kept = self.observed().to(z.device)
        return self.check_output(self.V(torch.where(kept, 1 / s.where(kept, 1), 0) * z), "pinv")

    def ridge(self, y: Tensor, x0: Tensor, rho: float, iterations: int | None = None) -> Tensor:
        r"""The regularised least-squares solution of :meth:`LinearOperator.ridge`, exactly in
        the spectral space: :math:`(s\, U^\top y + \rho V^\top x_0) / (s^2 + \rho)` on the
        observed coordinates, :math:`V^\top x_0` on the others (``iterations`` is unused)."""
        rho = checks.number(rho, "rho", low=0)
        self.check_input(x0, "x0")
        z0, zy = self.Vt(x0), self.Ut(y.expand(x0.shape[0], *self.out_shape))
        s = self.singulars.to(z0.device, z0.dtype)
        observed = self.observed().to(z0.device)
        blended = (s * zy + rho * z0) / (s**2 + rho).where(observed, 1)
        return self.check_output(self.V(torch.where(observed, blended, z0)), "ridge solution")
