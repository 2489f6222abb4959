"""Every operator with a small example instance, for tests and configs."""

from __future__ import annotations

import torch

from operators.base import Operator
from operators.blocks import AveragePoolSR, Colorization
from operators.inpainting import Inpainting, Outpainting
from operators.masks import box_mask
from operators.matrix import MatrixOperator

__all__ = ["examples"]


def examples() -> dict[str, tuple[Operator, tuple[int, ...]]]:
    """Name -> (instance, per-sample input shape), each small enough for float64 tests."""
    g = torch.Generator().manual_seed(0)
    ops: dict[str, Operator] = {
        "matrix_wide": MatrixOperator(torch.randn(3, 7, generator=g, dtype=torch.float64)),
        "matrix_tall": MatrixOperator(torch.randn(6, 4, generator=g, dtype=torch.float64)),
        "inpainting_box": Inpainting(box_mask(8, 8, 2, 3, 4, 3), (3, 8, 8)),
        "outpainting": Outpainting((3, 8, 8), 2, 2, 4, 4),
        "sr_avgpool_x2": AveragePoolSR((3, 8, 8), 2),
        "sr_avgpool_x4": AveragePoolSR((1, 8, 8), 4),
        "colorization": Colorization((3, 6, 5)),
    }
    return {name: (op, op.in_shape) for name, op in ops.items()}
