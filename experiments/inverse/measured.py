r"""A degraded image the user already has, with no ground truth: the restore app's
``measurement=`` mode.

Exactly one of three files or numbers says what the degradation was:

- ``scale=f``: the measurement is a low-resolution image; the restoration is ``f`` times
  larger. ``sr_model`` picks the forward model: ``average`` (each low-resolution pixel is the
  mean of an :math:`f \times f` block: :class:`operators.AveragePoolSR`, exact SVD, so every
  method applies) or ``bicubic`` (deepinv's bicubic filter then subsampling, what most image
  libraries' downscaling does: :class:`operators.BicubicSR`);
- ``mask=<file>``: inpainting; a grey image of the measurement's size, white (≥ 0.5) where
  pixels were observed (:class:`operators.Inpainting`; what the measurement holds elsewhere
  is ignored);
- ``kernel=<file>``: deblurring with a known kernel, a ``.npy`` array or a grey image,
  normalised to sum 1 (:class:`operators.Blur` with reflected borders).

The noise level :math:`\sigma_y` (images in [-1, 1]) is an input; when it is ``null`` it is
estimated from the measurement by the wavelet estimator of Donoho & Johnstone (1994): the
median absolute value of the finest diagonal wavelet coefficients divided by 0.6745
(scikit-image's ``estimate_sigma``), on the observed pixels' linear interpolation for
inpainting. The estimate is reported in ``metrics.json``; it is biased upwards on strongly
textured images and cannot see noise removed by a camera's own denoising.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from omegaconf import DictConfig
from torch import Tensor

import checks
import operators

from experiments.shared.fills import interpolate
from experiments.shared.images import image_files, read_images

__all__ = ["Measured", "estimate_sigma", "read_measurement"]

SR_MODELS = ("average", "bicubic")


@dataclass
class Measured:
    """A user's measurement ready to restore."""

    task: str  # sr<f>, inpaint or deblur
    op: operators.LinearOperator
    y: Tensor  # (N, *out_shape), float64 in [-1, 1] units
    stems: list[str]
    sigma_y: float
    estimated: bool  # whether sigma_y was estimated


def estimate_sigma(image: Tensor) -> float:
    """The Donoho-Johnstone noise estimate of images :math:`(N, C, H, W)` in [-1, 1] units
    (the mean over images and channels of scikit-image's ``estimate_sigma``)."""
    from skimage.restoration import estimate_sigma as wavelet_sigma

    x01 = ((image.double() + 1) / 2).numpy()
    values = [
        wavelet_sigma(x01[n, c], channel_axis=None)
        for n in range(x01.shape[0])
        for c in range(x01.shape[1])
    ]
    return 2 * float(np.mean(values))


def _read_kernel(path: Path) -> Tensor:
    if path.suffix.lower() == ".npy":
        try:
            kernel = torch.from_numpy(np.load(path, allow_pickle=False)).double()
        except (OSError, ValueError) as error:
            raise ValueError(f"kernel {path} is not a readable .npy array: {error}") from error
    else:
        image = read_images(path)
        if image.shape[1] != 1:
            raise ValueError(f"kernel {path} must be a grey image, got {image.shape[1]} channels")
        kernel = (image[0, 0] + 1) / 2
    if kernel.ndim != 2:
        raise ValueError(f"kernel {path} must be 2-D, got shape {tuple(kernel.shape)}")
    if not bool(torch.isfinite(kernel).all()) or float(kernel.min()) < 0:
        raise ValueError(f"kernel {path} must be finite and non-negative")
    total = float(kernel.sum())
    if total <= 0:
        raise ValueError(f"kernel {path} sums to {total}: it must have a positive entry")
    return operators.check_kernel(kernel / total)


def _read_mask(path: Path, size: tuple[int, int]) -> Tensor:
    mask = read_images(path)
    if mask.shape[1] != 1:
        raise ValueError(f"mask {path} must be a grey image, got {mask.shape[1]} channels")
    if tuple(mask.shape[-2:]) != size:
        raise ValueError(
            f"mask {path} is {mask.shape[-2]}x{mask.shape[-1]}, the measurement is "
            f"{size[0]}x{size[1]}: they must match"
        )
    observed = ((mask[0, 0] + 1) / 2 >= 0.5).double()
    if not bool(observed.any()):
        raise ValueError(f"mask {path} observes no pixel (white marks the observed ones)")
    return observed


def read_measurement(cfg: DictConfig) -> Measured:
    """The measurement, its operator and its noise level from the restore app's config
    (``measurement``, ``scale`` / ``mask`` / ``kernel``, ``sr_model``, ``sigma_y``), with
    every problem refused before any work: unreadable files, a mask that does not match,
    several or no degradations (the restore app checks the prior's channels and size
    against ``op.in_shape``)."""
    path = Path(str(cfg.measurement))
    given = [k for k in ("scale", "mask", "kernel") if cfg.get(k) is not None]
    if len(given) != 1:
        raise ValueError(
            "measurement= needs exactly one of scale=<factor> (super-resolution), "
            f"mask=<file> (inpainting) or kernel=<file> (deblurring); got {given or 'none'}"
        )
    y = read_images(path)
    stems = [f.stem for f in image_files(path)]
    c, h, w = y.shape[1:]
    if given == ["scale"]:
        factor = checks.integer(cfg.scale, "scale", low=2)
        model = str(cfg.sr_model)
        if model not in SR_MODELS:
            raise ValueError(f"sr_model must be one of {SR_MODELS}, got {model!r}")
        shape = (c, h * factor, w * factor)
        op = (
            operators.AveragePoolSR(shape, factor)
            if model == "average"
            else operators.BicubicSR(shape, factor)
        )
        task = f"sr{factor}"
    elif given == ["mask"]:
        observed = _read_mask(Path(str(cfg.mask)), (h, w))
        op = operators.Inpainting(observed.expand(c, h, w).clone(), (c, h, w))
        y = op(y)  # what the file holds at the missing pixels is not a measurement
        task = "inpaint"
    else:
        kernel = _read_kernel(Path(str(cfg.kernel)))
        op = operators.Blur(kernel, (c, h, w), padding="reflect")
        task = "deblur"
    if cfg.sigma_y is None:
        seen = interpolate(op, y, 0.0) if isinstance(op, operators.Inpainting) else y
        sigma_y, estimated = estimate_sigma(seen), True
    else:
        sigma_y, estimated = checks.number(cfg.sigma_y, "sigma_y", low=0), False
    return Measured(task, op, y, stems, sigma_y, estimated)
