r"""Binary masks for :class:`~operators.inpainting.Inpainting` (1 = observed), of shape
:math:`(1, H, W)` so that they broadcast over channels. Random masks take a generator."""

from __future__ import annotations

import math

import torch

from torch import Tensor

import checks

__all__ = ["box_mask", "half_mask", "random_pixel_mask", "stroke_mask"]


def _size(height: int, width: int) -> tuple[int, int]:
    return checks.integer(height, "height", low=1), checks.integer(width, "width", low=1)


def box_mask(height: int, width: int, top: int, left: int, box_h: int, box_w: int) -> Tensor:
    """Everything observed except a ``box_h`` x ``box_w`` box at (top, left)."""
    height, width = _size(height, width)
    top, left = checks.integer(top, "top", low=0), checks.integer(left, "left", low=0)
    box_h, box_w = checks.integer(box_h, "box_h", low=1), checks.integer(box_w, "box_w", low=1)
    if top + box_h > height or left + box_w > width:
        raise ValueError(f"the box does not fit a {height}x{width} image")
    mask = torch.ones(1, height, width)
    mask[:, top : top + box_h, left : left + box_w] = 0
    return mask


def half_mask(height: int, width: int, keep: str = "left") -> Tensor:
    """Only one half observed: ``keep`` is "left", "right", "top" or "bottom" (the halved
    side needs at least 2 pixels, so that both halves are non-empty)."""
    height, width = _size(height, width)
    mask = torch.zeros(1, height, width)
    halves = {
        "left": (slice(None), slice(0, width // 2)),
        "right": (slice(None), slice(width // 2, None)),
        "top": (slice(0, height // 2), slice(None)),
        "bottom": (slice(height // 2, None), slice(None)),
    }
    if keep not in halves:
        raise ValueError(f"keep must be one of {sorted(halves)}, got {keep!r}")
    side, size = ("width", width) if keep in ("left", "right") else ("height", height)
    if size < 2:
        raise ValueError(f"half_mask(keep={keep!r}) needs {side} >= 2, got {size}")
    rows, cols = halves[keep]
    mask[:, rows, cols] = 1
    return mask


def random_pixel_mask(
    height: int, width: int, keep: float, generator: torch.Generator | None = None
) -> Tensor:
    """Each pixel observed independently with probability ``keep``."""
    height, width = _size(height, width)
    keep = checks.number(keep, "keep", low=0, high=1)
    return (torch.rand(1, height, width, generator=generator) < keep).float()


def stroke_mask(
    height: int,
    width: int,
    strokes: int = 4,
    thickness: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Free-form brush strokes hidden (0): each stroke is a random walk of 4-8 segments of
    random direction and length, drawn with radius ``thickness`` pixels."""
    height, width = _size(height, width)
    strokes = checks.integer(strokes, "strokes", low=0)
    thickness = checks.number(thickness, "thickness", low=0, open_low=True)
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    hidden = torch.zeros(height, width, dtype=torch.bool)
    for _ in range(strokes):
        u = torch.rand(3 + 2 * 8, generator=generator)
        y, x = float(u[0]) * (height - 1), float(u[1]) * (width - 1)
        segments = 4 + int(float(u[2]) * 5)
        for k in range(segments):
            angle = 2 * math.pi * float(u[3 + 2 * k % 16])
            length = (0.1 + 0.3 * float(u[4 + 2 * k % 16])) * max(height, width)
            for step in torch.linspace(0, 1, max(2, int(length))):
                py = min(max(y + float(step) * length * math.sin(angle), 0), height - 1)
                px = min(max(x + float(step) * length * math.cos(angle), 0), width - 1)
                hidden |= (rows - py) ** 2 + (cols - px) ** 2 <= thickness**2
            y = min(max(y + length * math.sin(angle), 0), height - 1)
            x = min(max(x + length * math.cos(angle), 0), width - 1)
    return (~hidden).float()[None]
