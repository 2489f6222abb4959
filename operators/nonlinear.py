r"""Nonlinear, differentiable operators (vector-Jacobian products by autograd).

- :class:`PhaseRetrieval`: Fourier magnitudes of the zero-padded image,
  :math:`y = |F \operatorname{pad}(x)|` (unitary DFT), as in DPS. Besides the phase, the
  measurement cannot tell :math:`x` from :math:`-x`, its translates inside the padding or its
  point reflection: these are the problem's trivial ambiguities.
- :class:`SaturatingSensor`: a high-dynamic-range scene seen by a sensor that saturates,
  :math:`y = \tanh(g x)`; bright and dark regions are compressed and information there
  survives only through the slope.
- :class:`NonlinearBlur`: blur happens on linear irradiance but the camera records
  tone-mapped values: with :math:`L(x) = ((x + 1) / 2)_+^{\gamma}`,
  :math:`y = 2 (k \circledast L(x) + \epsilon)^{1/\gamma} - 1`. The kernel is fixed when the
  operator is built (the DPS repository's "nonlinear blur" draws a new kernel at every call,
  so its operator is not a function; this one is pure).

References:
    | Diffusion Posterior Sampling for General Noisy Inverse Problems (Chung et al., 2023),
    | Section 4 (phase retrieval, nonlinear deblurring) https://arxiv.org/abs/2209.14687
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from torch import Tensor

import checks

from operators.base import Operator, check_image_shape
from operators.blur import check_kernel, circular_convolve

__all__ = ["NonlinearBlur", "PhaseRetrieval", "SaturatingSensor"]


class PhaseRetrieval(Operator):
    r"""Fourier phase retrieval :math:`y = |F \operatorname{pad}(x)|` with oversampling.

    Arguments:
        in_shape: The image shape :math:`(C, H, W)`.
        oversampling: The padded size over the image size (>= 1); 2 pads each side by half
            the image, which makes generic images identifiable up to the trivial ambiguities.
    """

    #: torch's FFT has no float16 / bfloat16 kernels on the CPU.
    supports_half: ClassVar[bool] = False

    def __init__(self, in_shape: Sequence[int], oversampling: float = 2.0) -> None:
        c, h, w = check_image_shape(in_shape)
        oversampling = checks.number(oversampling, "oversampling", low=1)
        self.pad_h = round((oversampling - 1) * h / 2)
        self.pad_w = round((oversampling - 1) * w / 2)
        super().__init__((c, h, w), (c, h + 2 * self.pad_h, w + 2 * self.pad_w))
        self.oversampling = float(oversampling)

    def apply(self, x: Tensor) -> Tensor:
        padded = torch.nn.functional.pad(x, (self.pad_w, self.pad_w, self.pad_h, self.pad_h))
        return torch.fft.fft2(padded, norm="ortho").abs()


class SaturatingSensor(Operator):
    r"""A saturating sensor :math:`y = \tanh(g x)` of gain :math:`g > 0`.

    Arguments:
        in_shape: The image shape.
        gain: :math:`g`; the scene's range :math:`[-1, 1]` maps to
            :math:`[-\tanh g, \tanh g]`, so larger gains saturate more.
    """

    def __init__(self, in_shape: Sequence[int], gain: float = 2.0) -> None:
        self.gain = checks.number(gain, "gain", low=0, open_low=True)
        super().__init__(in_shape, in_shape)

    def apply(self, x: Tensor) -> Tensor:
        return torch.tanh(self.gain * x)


class NonlinearBlur(Operator):
    r"""Blur in linear irradiance seen through a gamma tone curve (see the module).

    Arguments:
        kernel: The fixed blur kernel, :math:`(h, w)` or :math:`(C, h, w)`.
        in_shape: The image shape :math:`(C, H, W)`.
        gamma: The tone curve's exponent :math:`\gamma > 0`.
        eps: The offset :math:`\epsilon > 0` that keeps the derivative finite at black.
    """

    #: torch's FFT has no float16 / bfloat16 kernels on the CPU.
    supports_half: ClassVar[bool] = False

    def __init__(
        self, kernel: Tensor, in_shape: Sequence[int], gamma: float = 2.2, eps: float = 1e-3
    ) -> None:
        self.gamma = checks.number(gamma, "gamma", low=0, open_low=True)
        self.eps = checks.number(eps, "eps", low=0, open_low=True)
        super().__init__(check_image_shape(in_shape), in_shape)
        self.register_buffer("kernel", check_kernel(kernel, self.in_shape))

    def apply(self, x: Tensor) -> Tensor:
        irradiance = ((x + 1) / 2).clamp_min(0) ** self.gamma
        blurred = circular_convolve(irradiance, self.kernel).clamp_min(0)
        return 2 * (blurred + self.eps) ** (1 / self.gamma) - 1
