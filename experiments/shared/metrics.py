"""Image scores of the apps: PSNR and SSIM through deepinv's metrics on :math:`[0, 1]`
images (ours live in :math:`[-1, 1]`), and the RMS of a measurement residual."""

from __future__ import annotations

from torch import Tensor

import operators

__all__ = ["psnr", "residual", "ssim", "to01"]


def to01(x: Tensor) -> Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(x: Tensor, truth: Tensor) -> Tensor:
    """Per-image PSNR (dB) on [0, 1] images (deepinv)."""
    import deepinv

    return deepinv.metric.PSNR()(to01(x), to01(truth))


def ssim(x: Tensor, truth: Tensor) -> Tensor:
    """Per-image SSIM on [0, 1] images (deepinv)."""
    import deepinv

    return deepinv.metric.SSIM()(to01(x), to01(truth))


def residual(op: operators.Operator, x: Tensor, y: Tensor) -> Tensor:
    """Per-row RMS of ``A x - y`` over the measured entries."""
    r = (op(x.double()) - y.double()).flatten(1)
    if isinstance(op, operators.Inpainting):
        r = r[:, op.mask.expand(op.out_shape).flatten() > 0]
    return r.pow(2).mean(1).sqrt()
