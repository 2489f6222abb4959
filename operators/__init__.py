"""Forward operators and noise models: the measurement side of every task.

``operators`` never imports ``priors`` or ``guided``.
"""

from operators.adapters import (
    DeepinvLinearOperator,
    DeepinvOperator,
    DeepinvSVDOperator,
    as_deepinv,
    measurement_from_deepinv,
    measurement_to_deepinv,
)
from operators.base import (
    LinearOperator,
    NotDifferentiableError,
    Operator,
    SVDOperator,
    UnsupportedOperator,
    check_image_shape,
    check_shape,
    check_sizes,
)
from operators.blackbox import JPEG, BlackBox, Quantization, StraightThrough
from operators.blocks import AveragePoolSR, BlockProjection, Colorization
from operators.blur import (
    BicubicSR,
    Blur,
    CircularBlur,
    check_kernel,
    circular_convolve,
    gaussian_kernel,
    motion_kernel,
)
from operators.fourier import RealFourier
from operators.inpainting import Inpainting, Outpainting, place
from operators.kinematics import PlanarKinematics
from operators.linalg import batch_dot, cg, project_simplex
from operators.masks import box_mask, half_mask, random_pixel_mask, stroke_mask
from operators.matrix import MatrixOperator
from operators.noise import GaussianNoise, PoissonNoise
from operators.nonlinear import NonlinearBlur, PhaseRetrieval, SaturatingSensor
from operators.planner import PathPlanner
from operators.registry import examples
from operators.transfer import ConvolutiveTransfer
from operators.unknown import BlindBlur, ChannelGain, ChannelMixing, UnknownOperator

__all__ = [
    "JPEG",
    "AveragePoolSR",
    "BicubicSR",
    "BlackBox",
    "BlindBlur",
    "BlockProjection",
    "Blur",
    "ChannelGain",
    "ChannelMixing",
    "CircularBlur",
    "Colorization",
    "ConvolutiveTransfer",
    "DeepinvLinearOperator",
    "DeepinvOperator",
    "DeepinvSVDOperator",
    "GaussianNoise",
    "Inpainting",
    "LinearOperator",
    "MatrixOperator",
    "NonlinearBlur",
    "NotDifferentiableError",
    "Operator",
    "Outpainting",
    "PathPlanner",
    "PhaseRetrieval",
    "PlanarKinematics",
    "PoissonNoise",
    "Quantization",
    "RealFourier",
    "SVDOperator",
    "SaturatingSensor",
    "StraightThrough",
    "UnknownOperator",
    "UnsupportedOperator",
    "as_deepinv",
    "batch_dot",
    "box_mask",
    "cg",
    "check_image_shape",
    "check_kernel",
    "check_shape",
    "check_sizes",
    "circular_convolve",
    "examples",
    "gaussian_kernel",
    "half_mask",
    "measurement_from_deepinv",
    "measurement_to_deepinv",
    "motion_kernel",
    "place",
    "project_simplex",
    "random_pixel_mask",
    "stroke_mask",
]
