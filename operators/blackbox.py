r"""Non-differentiable operators: their Jacobian is zero almost everywhere or does not exist
in torch at all, so they declare ``differentiable = False`` and guidance must be
derivative-free (ensemble Kalman, zeroth-order smoothing, learned surrogate likelihoods).

- :class:`Quantization`: :math:`y = \operatorname{round}(x)` on :math:`L` evenly spaced levels
  of :math:`[-1, 1]` (values outside are clipped first).
- :class:`JPEG`: encode and decode with libjpeg through Pillow at a given quality.
- :class:`BlackBox`: any numpy function of a batch, e.g. a simulator or a legacy pipeline.

:class:`StraightThrough` is the differentiable twin of a shape-keeping one (its values, the
identity's gradient), for comparing derivative-free guidance with DPS.
"""

from __future__ import annotations

import io

from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch

from PIL import Image
from torch import Tensor

import checks

from operators.base import Operator, check_image_shape

__all__ = ["JPEG", "BlackBox", "Quantization", "StraightThrough"]


class Quantization(Operator):
    r"""Uniform quantization of :math:`[-1, 1]` to ``levels`` values (clip, then round).

    Arguments:
        in_shape: The input shape (the output has the same shape).
        levels: The number of levels :math:`L \geq 2` (e.g. 8 for 3 bits).
    """

    differentiable: ClassVar[bool] = False

    def __init__(self, in_shape: Sequence[int], levels: int = 8) -> None:
        self.levels = checks.integer(levels, "levels", low=2)
        super().__init__(in_shape, in_shape)

    def apply(self, x: Tensor) -> Tensor:
        step = 2 / (self.levels - 1)
        return torch.round((x.clamp(-1, 1) + 1) / step) * step - 1


class JPEG(Operator):
    r"""JPEG compression: the image in :math:`[-1, 1]` is clipped, rounded to 8 bits,
    encoded at ``quality`` and decoded.

    Arguments:
        in_shape: :math:`(C, H, W)` with :math:`C \in \{1, 3\}`.
        quality: The libjpeg quality, 1 to 100.
    """

    differentiable: ClassVar[bool] = False

    def __init__(self, in_shape: Sequence[int], quality: int = 50) -> None:
        if check_image_shape(in_shape)[0] not in (1, 3):
            raise ValueError(f"JPEG needs images of shape (1 or 3, H, W), got {tuple(in_shape)}")
        self.quality = checks.integer(quality, "quality", low=1, high=100)
        super().__init__(in_shape, in_shape)

    def _roundtrip(self, pixels: np.ndarray) -> np.ndarray:
        """One uint8 image (H, W, C) through the codec."""
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
        return decoded.reshape(pixels.shape)

    def apply(self, x: Tensor) -> Tensor:
        pixels = torch.round((x.detach().clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
        pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
        decoded = np.stack([self._roundtrip(p) for p in pixels])
        out = torch.from_numpy(decoded).permute(0, 3, 1, 2)
        return out.to(x.device, x.dtype) / 127.5 - 1


class BlackBox(Operator):
    r"""Any numpy function as an operator.

    Arguments:
        function: Maps a float64 array of shape :math:`(B, *in\_shape)` to an array of shape
            :math:`(B, *out\_shape)` (or one sample to one measurement when ``batched`` is
            false). It must be a function: the same input gives the same output.
        in_shape: The input's per-sample shape.
        out_shape: The measurement's per-sample shape.
        batched: Whether ``function`` takes a whole batch.
    """

    differentiable: ClassVar[bool] = False

    def __init__(
        self,
        function: Callable[[np.ndarray], np.ndarray],
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        batched: bool = True,
    ) -> None:
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        super().__init__(in_shape, out_shape)
        self.function, self.batched = function, checks.flag(batched, "batched")

    def apply(self, x: Tensor) -> Tensor:
        # a copy: a function that writes into its input must not change the caller's tensor
        array = x.detach().to("cpu", torch.float64, copy=True).numpy()
        if self.batched:
            out = np.asarray(self.function(array))
        else:
            out = np.stack([np.asarray(self.function(sample)) for sample in array])
        expected = (x.shape[0], *self.out_shape)
        if out.shape != expected:
            raise ValueError(
                f"the black-box function returned shape {out.shape}, expected {expected}"
            )
        if not np.issubdtype(out.dtype, np.number) or np.iscomplexobj(out):
            raise TypeError(f"the black-box function must return real numbers, got {out.dtype}")
        y = torch.as_tensor(out).to(x.device, x.dtype)  # then checked in the input's dtype
        if not bool(torch.isfinite(y).all()):
            raise ValueError(
                f"the black-box function returned NaN or Inf in {x.dtype} (non-finite values, "
                "or values beyond the dtype's range)"
            )
        return y


class StraightThrough(Operator):
    r"""The straight-through twin of an operator that keeps the shape (quantization, JPEG):
    the values of :math:`A(x)`, the derivatives of the identity,
    :math:`x + \operatorname{sg}[A(x) - x]`. It makes gradient guidance (DPS) applicable
    to such operators, as the straight-through estimator does for quantized networks.

    Arguments:
        op: An operator whose output shape is its input shape.

    References:
        | Estimating or Propagating Gradients Through Stochastic Neurons for Conditional
        | Computation (Bengio et al., 2013) https://arxiv.org/abs/1308.3432
    """

    def __init__(self, op: Operator) -> None:
        if not isinstance(op, Operator):
            raise TypeError(f"op must be an operators.Operator, got {type(op).__name__}")
        if op.in_shape != op.out_shape:
            raise ValueError(
                f"a straight-through twin needs out_shape == in_shape, got {op.in_shape} -> "
                f"{op.out_shape}"
            )
        super().__init__(op.in_shape, op.out_shape)
        self.op = op

    def apply(self, x: Tensor) -> Tensor:
        return x + (self.op(x.detach()) - x).detach()
