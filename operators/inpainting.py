r"""Inpainting and outpainting: :math:`y = m \odot x` for a binary mask :math:`m`.

The SVD is trivial: :math:`U = V = I` and the singular values are the mask, so the
measurement keeps the input's shape with zeros where nothing is observed, and
:math:`A^+ = A^\top = A`. Outpainting is inpainting whose observed region is the placed image
and whose unknown region is the border around it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torch import Tensor

import checks

from operators.base import SVDOperator, check_image_shape, check_sizes

__all__ = ["Inpainting", "Outpainting", "place"]


class Inpainting(SVDOperator):
    r"""Observe the entries where the mask is 1.

    Arguments:
        mask: A binary mask of the input's shape :math:`(C, H, W)` (or any per-sample shape),
            or of a shape that broadcasts to ``in_shape`` (e.g. :math:`(1, H, W)`).
        in_shape: The input's shape; defaults to the mask's shape.
    """

    def __init__(self, mask: Tensor, in_shape: Sequence[int] | None = None) -> None:
        mask = torch.as_tensor(mask)
        if mask.is_complex():
            raise TypeError(f"mask must be real (0 and 1), got {mask.dtype}")
        in_shape = tuple(mask.shape) if in_shape is None else check_sizes(in_shape, "in_shape")
        if not mask.numel() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be binary (only 0 and 1)")
        try:
            mask = torch.broadcast_to(mask, in_shape)
        except RuntimeError as error:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the input shape "
                f"{in_shape}"
            ) from error
        super().__init__(in_shape, in_shape)
        self.register_buffer("mask", mask.to(torch.float64).clone())

    @property
    def singulars(self) -> Tensor:
        return self.mask

    def U(self, z: Tensor) -> Tensor:
        return z

    def Ut(self, y: Tensor) -> Tensor:
        return y

    def V(self, z: Tensor) -> Tensor:
        return z

    def Vt(self, x: Tensor) -> Tensor:
        return x


class Outpainting(Inpainting):
    r"""Extend an image placed on a larger canvas: the placed image is observed, the border
    around it is unknown (the complement of the observed box).

    Arguments:
        canvas_shape: The canvas shape :math:`(C, H, W)`.
        top: The row of the image's top-left corner on the canvas.
        left: The column of the image's top-left corner on the canvas.
        height: The image's height.
        width: The image's width.
    """

    def __init__(
        self, canvas_shape: Sequence[int], top: int, left: int, height: int, width: int
    ) -> None:
        c, h, w = check_image_shape(canvas_shape, "canvas_shape")
        top, left = checks.integer(top, "top", low=0), checks.integer(left, "left", low=0)
        height = checks.integer(height, "height", low=1)
        width = checks.integer(width, "width", low=1)
        if top + height > h or left + width > w:
            raise ValueError(
                f"an image of {height}x{width} at ({top}, {left}) does not fit a {h}x{w} canvas"
            )
        if height == h and width == w:
            raise ValueError("the image fills the canvas: there is nothing to outpaint")
        mask = torch.zeros(1, h, w)
        mask[:, top : top + height, left : left + width] = 1
        super().__init__(mask, (c, h, w))
        self.box = (top, left, height, width)


def place(image: Tensor, canvas_shape: Sequence[int], top: int, left: int) -> Tensor:
    """Puts a batch of images (B, C, h, w) on zero canvases of shape (C, H, W) at (top, left)."""
    c, h, w = check_image_shape(canvas_shape, "canvas_shape")
    checks.real_tensor(image, "image")
    top, left = checks.integer(top, "top", low=0), checks.integer(left, "left", low=0)
    if image.ndim != 4 or image.shape[1] != c:
        raise ValueError(f"image must have shape (B, {c}, h, w), got {tuple(image.shape)}")
    ih, iw = image.shape[-2:]
    if top < 0 or left < 0 or top + ih > h or left + iw > w:
        raise ValueError(f"an image of {ih}x{iw} at ({top}, {left}) does not fit a {h}x{w} canvas")
    canvas = image.new_zeros(image.shape[0], c, h, w)
    canvas[:, :, top : top + ih, left : left + iw] = image
    return canvas
