r"""Blur :math:`y = k * x` (a true convolution, the same in every channel or per channel) and
bicubic super-resolution :math:`y = (k * x)\downarrow_f`.

- :class:`CircularBlur`: periodic boundaries, an :class:`~operators.base.SVDOperator` in the
  real Fourier basis of :mod:`operators.fourier`: :math:`V^\top` is that basis,
  the singular values are :math:`|\hat k|` and :math:`U` carries the phase of :math:`\hat k`.
- :class:`Blur`: zero, reflect or replicate padding (or ``valid``, which crops), a
  :class:`~operators.base.LinearOperator` through deepinv's ``conv2d`` and its exact adjoint
  ``conv_transpose2d``.
- :class:`BicubicSR`: deepinv's bicubic anti-aliasing filter then subsampling by
  :math:`f` (the operator of ``deepinv.physics.Downsampling(filter="bicubic")``).

Kernels come from deepinv (:func:`gaussian_kernel`, :func:`motion_kernel`) or from the user;
blur kernels are 2-D (or one per channel), of odd size (so their centre is a pixel),
non-negative and sum to 1 (:func:`check_kernel`).

References:
    | Gaussian and motion blur as in DPS (Chung et al., 2023), https://arxiv.org/abs/2209.14687
    | Motion kernels: deepinv's ``MotionBlurGenerator`` (Gaussian-process trajectories).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from deepinv.physics import functional as dF
from deepinv.physics.functional.blur import bicubic_filter, gaussian_blur
from deepinv.physics.generator import MotionBlurGenerator
from torch import Tensor

import checks

from operators.base import LinearOperator, SVDOperator, check_image_shape, check_shape
from operators.fourier import RealFourier

__all__ = [
    "BicubicSR",
    "Blur",
    "CircularBlur",
    "check_kernel",
    "circular_convolve",
    "gaussian_kernel",
    "motion_kernel",
]

PADDINGS = ("zeros", "reflect", "replicate", "circular", "valid")


def check_kernel(kernel: Tensor, in_shape: Sequence[int] | None = None) -> Tensor:
    r"""Validates a blur kernel and returns it as float64 of shape :math:`(c, h, w)`.

    A kernel is :math:`(h, w)` (shared by the channels) or :math:`(C, h, w)` (one per
    channel), finite, of odd sizes, non-negative and summing to 1 (per channel, to within
    1e-6; it is then renormalised exactly). With ``in_shape`` it must also fit the image.
    """
    kernel = torch.as_tensor(kernel).detach()
    if kernel.is_complex() or kernel.dtype == torch.bool:
        raise TypeError(f"kernel must be real, got {kernel.dtype}")
    if kernel.ndim == 2:
        kernel = kernel[None]
    if kernel.ndim != 3:
        raise ValueError(f"kernel must have shape (h, w) or (C, h, w), got {tuple(kernel.shape)}")
    kernel = kernel.to(torch.float64)
    h, w = kernel.shape[-2:]
    if h % 2 == 0 or w % 2 == 0:
        raise ValueError(f"kernel sizes must be odd (the centre is a pixel), got {h}x{w}")
    if not bool(torch.isfinite(kernel).all()):
        raise ValueError("kernel contains NaN or Inf")
    if float(kernel.min()) < 0:
        raise ValueError(f"kernel has negative entries (min {float(kernel.min()):.3g})")
    sums = kernel.sum(dim=(-2, -1))
    if not bool(torch.allclose(sums, torch.ones_like(sums), rtol=0, atol=1e-6)):
        raise ValueError(f"kernel must sum to 1 (per channel), got sums {sums.tolist()}")
    if in_shape is not None:
        c, height, width = in_shape
        if kernel.shape[0] not in (1, c):
            raise ValueError(f"kernel has {kernel.shape[0]} channels, the image {c}")
        if h > height or w > width:
            raise ValueError(f"kernel {h}x{w} is larger than the image {height}x{width}")
    return kernel / sums[:, None, None]  # exact in float64 (float32 inputs are off by 1e-8)


def gaussian_kernel(
    sigma: float | tuple[float, float], angle: float = 0.0, size: int | None = None
) -> Tensor:
    r"""A (possibly anisotropic, rotated by ``angle`` degrees) Gaussian kernel, float64
    :math:`(size, size)`, from deepinv's ``gaussian_blur``; the default size is about
    :math:`6\sigma` (odd)."""
    if isinstance(sigma, tuple | list):
        if len(sigma) != 2:
            raise ValueError(f"sigma must be one or two positive numbers, got {sigma!r}")
        sigma = tuple(checks.number(s, "sigma", low=0, open_low=True) for s in sigma)
    else:
        sigma = (checks.number(sigma, "sigma", low=0, open_low=True),) * 2
    angle = checks.number(angle, "angle")
    if size is not None:
        size = checks.integer(size, "size", low=1)
        if size % 2 == 0:
            raise ValueError(f"size must be a positive odd integer, got {size}")
    psf = None if size is None else (size, size)
    kernel = gaussian_blur(psf_size=psf, sigma=sigma, angle=angle, dtype=torch.float64)
    return kernel[0, 0] / kernel[0, 0].sum()


def motion_kernel(
    size: int, generator: torch.Generator, length: float = 0.3, spread: float = 0.25
) -> Tensor:
    r"""A random motion-blur kernel, float64 :math:`(size, size)`: deepinv's
    ``MotionBlurGenerator`` (a Gaussian-process camera trajectory of length scale ``length``
    and standard deviation ``spread``) drawn with ``generator``."""
    size = checks.integer(size, "size", low=1)
    if size % 2 == 0:
        raise ValueError(f"size must be a positive odd number, got {size}")
    length = checks.number(length, "length", low=0, open_low=True)
    spread = checks.number(spread, "spread", low=0, open_low=True)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    draw = MotionBlurGenerator(
        (size, size), rng=generator, dtype=torch.float64, l=length, sigma=spread
    )
    kernel = draw.step(1)["filter"][0, 0]
    return check_kernel(kernel / kernel.sum())[0]


def circular_convolve(x: Tensor, kernel: Tensor, adjoint: bool = False) -> Tensor:
    r"""The periodic convolution :math:`k * x` (or its adjoint, the correlation) of images
    :math:`(B, C, H, W)` with a kernel :math:`(c, h, w)`, centred on pixel
    :math:`(h // 2, w // 2)`, through the FFT; differentiable in both arguments."""
    size = x.shape[-2:]
    spectrum = dF.filter_fft(kernel.to(x.dtype)[None], x.shape[1:], dims=(-2, -1))
    if adjoint:
        spectrum = spectrum.conj()
    return torch.fft.irfft2(spectrum * torch.fft.rfft2(x), s=size)


class CircularBlur(SVDOperator):
    r"""Blur with periodic boundaries, :math:`y = k \circledast x`, with its exact SVD.

    Arguments:
        kernel: The kernel, :math:`(h, w)` or :math:`(C, h, w)` (see :func:`check_kernel`).
        in_shape: The image shape :math:`(C, H, W)`; the measurement has the same shape.
    """

    #: torch's FFT has no float16 / bfloat16 kernels on the CPU.
    supports_half: ClassVar[bool] = False

    def __init__(self, kernel: Tensor, in_shape: Sequence[int]) -> None:
        super().__init__(in_shape, in_shape)
        _c, h, w = self.in_shape
        self.register_buffer("kernel", check_kernel(kernel, self.in_shape))
        self.basis = RealFourier(h, w)
        spectrum = dF.filter_fft(self.kernel[None], self.in_shape, dims=(-2, -1))[0]
        self.register_buffer("spectrum", spectrum)
        self.register_buffer("phase", self.basis.phase_of(spectrum))
        self.register_buffer("magnitude", self.basis.diagonal(spectrum.abs()))

    @property
    def singulars(self) -> Tensor:
        return self.magnitude

    def _rotate(self, spectrum: Tensor, conj: bool) -> Tensor:
        phase = self.phase.to(spectrum.device, spectrum.dtype)
        return spectrum * (phase.conj() if conj else phase)

    def U(self, z: Tensor) -> Tensor:
        size = self.in_shape[-2:]
        return torch.fft.irfft2(self._rotate(self.basis.unpack(z), False), s=size, norm="ortho")

    def Ut(self, y: Tensor) -> Tensor:
        return self.basis.pack(self._rotate(torch.fft.rfft2(y, norm="ortho"), True))

    def V(self, z: Tensor) -> Tensor:
        return self.basis.synthesis(z)

    def Vt(self, x: Tensor) -> Tensor:
        return self.basis.analysis(x)

    def _spectrum(self, x: Tensor) -> Tensor:
        """The kernel's half spectrum in the complex dtype of ``x``'s FFT."""
        return self.spectrum.to(x.device, x.dtype.to_complex())

    def _filter(self, x: Tensor, spectrum: Tensor) -> Tensor:
        return torch.fft.irfft2(spectrum * torch.fft.rfft2(x), s=self.in_shape[-2:])

    def apply(self, x: Tensor) -> Tensor:
        return self._filter(x, self._spectrum(x))

    def apply_adjoint(self, y: Tensor) -> Tensor:
        return self._filter(y, self._spectrum(y).conj())

    def pinv(self, y: Tensor) -> Tensor:
        r""":math:`A^+ y`, directly in the Fourier domain:
        :math:`\hat k^* / |\hat k|^2` where :math:`|\hat k| >` ``rcond``, else 0."""
        check_shape(y, self.out_shape, "y", half=False)
        spectrum = self._spectrum(y)
        kept = spectrum.abs() > self.rcond
        inverse = torch.where(kept, 1 / spectrum.where(kept, 1), 0)
        return self.check_output(self._filter(y, inverse), "pseudo-inverse")


def _check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


class Blur(LinearOperator):
    r"""Blur with padded boundaries (``zeros``, ``reflect``, ``replicate``, ``circular``) or
    without (``valid``: the output shrinks by the kernel size minus 1). Prefer
    :class:`CircularBlur` for periodic boundaries: same operator, closed-form SVD.

    Arguments:
        kernel: The kernel, :math:`(h, w)` or :math:`(C, h, w)` (see :func:`check_kernel`).
        in_shape: The image shape :math:`(C, H, W)`.
        padding: The boundary condition.
    """

    def __init__(self, kernel: Tensor, in_shape: Sequence[int], padding: str = "reflect") -> None:
        c, height, width = check_image_shape(in_shape)
        kernel = check_kernel(kernel, (c, height, width))
        h, w = kernel.shape[-2:]
        self.padding = _check_padding(padding)
        if padding == "reflect" and (h // 2 >= height or w // 2 >= width):
            raise ValueError("reflect padding needs a kernel smaller than twice the image")
        out = (c, height - h + 1, width - w + 1) if padding == "valid" else (c, height, width)
        super().__init__((c, height, width), out)
        self.register_buffer("kernel", kernel)

    def apply(self, x: Tensor) -> Tensor:
        return dF.conv2d(x, self.kernel.to(x.dtype)[None], padding=self.padding)

    def apply_adjoint(self, y: Tensor) -> Tensor:
        return dF.conv_transpose2d(y, self.kernel.to(y.dtype)[None], padding=self.padding)


class BicubicSR(LinearOperator):
    r"""Bicubic super-resolution: deepinv's bicubic filter (size :math:`4f`,
    :math:`a = -1/2`), then keep every :math:`f`-th pixel, :math:`y = (k * x)\downarrow_f`.

    Arguments:
        in_shape: The high-resolution shape :math:`(C, H, W)`; :math:`f` must divide
            :math:`H` and :math:`W`.
        factor: The factor :math:`f`.
        padding: The boundary condition of the filter (``reflect``, ``circular``, ...).
    """

    def __init__(self, in_shape: Sequence[int], factor: int, padding: str = "reflect") -> None:
        c, h, w = check_image_shape(in_shape)
        factor = checks.integer(factor, "factor", low=1)
        if h % factor or w % factor:
            raise ValueError(f"factor {factor} does not divide the image size {h}x{w}")
        if _check_padding(padding) == "valid":
            raise ValueError("BicubicSR needs a padding that keeps the size, not 'valid'")
        if padding == "reflect" and min(h, w) <= 2 * factor:
            raise ValueError(f"reflect padding needs images larger than {2 * factor} pixels")
        super().__init__((c, h, w), (c, h // factor, w // factor))
        self.factor, self.padding = factor, padding
        self.register_buffer("filter", bicubic_filter(factor).to(torch.float64))

    def apply(self, x: Tensor) -> Tensor:
        blurred = dF.conv2d(x, self.filter.to(x.dtype), padding=self.padding)
        return blurred[..., :: self.factor, :: self.factor]

    def apply_adjoint(self, y: Tensor) -> Tensor:
        up = y.new_zeros(y.shape[0], *self.in_shape)
        up[..., :: self.factor, :: self.factor] = y
        return dF.conv_transpose2d(up, self.filter.to(y.dtype), padding=self.padding)
