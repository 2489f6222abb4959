"""Forward operators and noise models: the measurement side of every task.

``operators`` never imports ``priors`` or ``guided``.
"""

from operators.base import (
    LinearOperator,
    NotDifferentiableError,
    Operator,
    SVDOperator,
    check_shape,
)
from operators.blocks import AveragePoolSR, BlockProjection, Colorization
from operators.inpainting import Inpainting, Outpainting, place
from operators.linalg import batch_dot, cg
from operators.masks import box_mask, half_mask, random_pixel_mask, stroke_mask
from operators.matrix import MatrixOperator
from operators.noise import GaussianNoise, PoissonNoise
from operators.registry import examples

__all__ = [
    "AveragePoolSR",
    "BlockProjection",
    "Colorization",
    "GaussianNoise",
    "Inpainting",
    "LinearOperator",
    "MatrixOperator",
    "NotDifferentiableError",
    "Operator",
    "Outpainting",
    "PoissonNoise",
    "SVDOperator",
    "batch_dot",
    "box_mask",
    "cg",
    "check_shape",
    "examples",
    "half_mask",
    "place",
    "random_pixel_mask",
    "stroke_mask",
]
