"""The image tasks of the apps: operators built for an image shape ``(C, H, W)``.

The configs' ``tasks_available`` entries name these (``_target_``) and the apps inject
``in_shape``; plain scripts build the same catalogue entries by :func:`from_catalogue`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

import operators

#: The task catalogue the Hydra apps load as ``tasks_available``.
CATALOGUE = Path(__file__).resolve().parents[1] / "configs" / "catalogue" / "tasks.yaml"

__all__ = [
    "box_inpainting",
    "from_catalogue",
    "gaussian_blur",
    "nonlinear_blur",
    "outpainting",
    "random_inpainting",
    "super_resolution",
]


def box_inpainting(in_shape: Sequence[int], fraction: float = 0.5) -> operators.Inpainting:
    """A centred square box covering ``fraction`` of the side is unknown."""
    _, h, w = in_shape
    bh, bw = max(1, round(h * fraction)), max(1, round(w * fraction))
    mask = operators.box_mask(h, w, (h - bh) // 2, (w - bw) // 2, bh, bw)
    return operators.Inpainting(mask, in_shape)


def random_inpainting(
    in_shape: Sequence[int], keep: float = 0.3, seed: int = 0
) -> operators.Inpainting:
    """Each pixel is observed with probability ``keep`` (one fixed mask)."""
    _, h, w = in_shape
    g = torch.Generator().manual_seed(seed)
    return operators.Inpainting(operators.random_pixel_mask(h, w, keep, g), in_shape)


def outpainting(in_shape: Sequence[int], keep: float = 0.5) -> operators.Outpainting:
    """Only a centred square of ``keep`` times the side is observed."""
    _, h, w = in_shape
    ih, iw = max(1, round(h * keep)), max(1, round(w * keep))
    return operators.Outpainting(in_shape, (h - ih) // 2, (w - iw) // 2, ih, iw)


def gaussian_blur(
    in_shape: Sequence[int], std: float = 1.0, size: int = 7
) -> operators.CircularBlur:
    """Periodic Gaussian blur (an exact SVD operator)."""
    return operators.CircularBlur(operators.gaussian_kernel(std, size=size), in_shape)


def nonlinear_blur(
    in_shape: Sequence[int], std: float = 1.0, size: int = 7, gamma: float = 2.2
) -> operators.NonlinearBlur:
    """Gaussian blur of the linear irradiance seen through a gamma tone curve (nonlinear,
    differentiable: :class:`operators.NonlinearBlur`)."""
    return operators.NonlinearBlur(operators.gaussian_kernel(std, size=size), in_shape, gamma)


def super_resolution(in_shape: Sequence[int], factor: int = 4) -> operators.AveragePoolSR:
    """Average-pooling super-resolution by ``factor`` (an exact SVD operator)."""
    return operators.AveragePoolSR(in_shape, factor)


def from_catalogue(name: str, in_shape: Sequence[int]) -> operators.Operator:
    """Task ``name`` of the task catalogue (:data:`CATALOGUE`) built for ``in_shape``: the
    operator the Hydra apps build for that name."""
    from omegaconf import OmegaConf

    from experiments.shared.build import build

    catalogue = OmegaConf.load(CATALOGUE)
    if name not in catalogue:
        raise ValueError(f"task must be one of {sorted(catalogue)}, got {name!r}")
    return build(catalogue[name], in_shape=tuple(in_shape))
