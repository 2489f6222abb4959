"""Every operator with a small example instance, for tests and configs."""

from __future__ import annotations

import numpy as np
import torch

from deepinv import physics as dphysics

from operators.adapters import DeepinvOperator
from operators.base import Operator
from operators.blackbox import JPEG, BlackBox, Quantization, StraightThrough
from operators.blocks import AveragePoolSR, Colorization
from operators.blur import BicubicSR, Blur, CircularBlur, gaussian_kernel, motion_kernel
from operators.inpainting import Inpainting, Outpainting
from operators.kinematics import PlanarKinematics
from operators.masks import box_mask
from operators.matrix import MatrixOperator
from operators.nonlinear import NonlinearBlur, PhaseRetrieval, SaturatingSensor
from operators.planner import PathPlanner
from operators.transfer import ConvolutiveTransfer
from operators.unknown import BlindBlur, ChannelGain, ChannelMixing

__all__ = ["examples"]


def _row_sums(x: np.ndarray) -> np.ndarray:
    """A black box for the examples: per-sample row sums, rounded to 2 decimals."""
    return np.round(x.sum(axis=-1), 2)


def examples() -> dict[str, tuple[Operator, tuple[int, ...]]]:
    """Name -> (instance, per-sample input shape), each small enough for float64 tests."""
    g = torch.Generator().manual_seed(0)
    motion = motion_kernel(5, g)
    gauss3 = gaussian_kernel(0.8, size=3)
    ops: dict[str, Operator] = {
        "matrix_wide": MatrixOperator(torch.randn(3, 7, generator=g, dtype=torch.float64)),
        "matrix_tall": MatrixOperator(torch.randn(6, 4, generator=g, dtype=torch.float64)),
        "inpainting_box": Inpainting(box_mask(8, 8, 2, 3, 4, 3), (3, 8, 8)),
        "outpainting": Outpainting((3, 8, 8), 2, 2, 4, 4),
        "sr_avgpool_x2": AveragePoolSR((3, 8, 8), 2),
        "sr_avgpool_x4": AveragePoolSR((1, 8, 8), 4),
        "sr_bicubic_x2": BicubicSR((2, 8, 8), 2),
        "sr_bicubic_x4": BicubicSR((1, 12, 16), 4, padding="circular"),
        "colorization": Colorization((3, 6, 5)),
        "blur_circular_gaussian": CircularBlur(gaussian_kernel(1.0, size=5), (2, 6, 7)),
        "blur_circular_motion": CircularBlur(motion, (1, 8, 8)),
        "blur_reflect": Blur(gauss3, (2, 6, 6), "reflect"),
        "blur_zeros": Blur(motion, (1, 7, 6), "zeros"),
        "blur_valid": Blur(gauss3, (1, 6, 5), "valid"),
        "phase_retrieval": PhaseRetrieval((1, 6, 6)),
        "saturating_sensor": SaturatingSensor((3, 4, 4), gain=1.5),
        "nonlinear_blur": NonlinearBlur(gauss3, (2, 6, 6)),
        "planar_kinematics": PlanarKinematics([1.0, 0.8, 0.5], points=[1, 3]),
        "quantization": Quantization((3, 4, 4), levels=8),
        "jpeg": JPEG((3, 16, 16), quality=75),
        "quantization_straight_through": StraightThrough(Quantization((3, 4, 4), levels=8)),
        "blackbox": BlackBox(_row_sums, (2, 5), (2,)),
        "path_planner": PathPlanner((1, 6, 7), torch.tensor([[[0, 0], [5, 6]], [[2, 1], [4, 5]]])),
        "blind_blur": BlindBlur((1, 6, 6), kernel=gauss3),
        "channel_gain": ChannelGain((3, 4, 4), torch.tensor([0.5, 1.0, 2.0])),
        "channel_mixing": ChannelMixing(
            (3, 4, 4), 2, torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
        ),
        "convolutive_transfer": ConvolutiveTransfer(
            2,
            3,
            64,
            n_fft=16,
            hop=4,
            taps=2,
            filters=torch.randn(2, 3, 9, 2, 2, generator=g, dtype=torch.float64),
        ),
        "deepinv_inpainting": DeepinvOperator(
            dphysics.Inpainting((2, 5, 5), mask=0.6, rng=torch.Generator().manual_seed(1)).to(
                torch.float64
            ),
            (2, 5, 5),
        ),
        "deepinv_blur": DeepinvOperator(
            dphysics.Blur(gauss3[None, None], padding="reflect").to(torch.float64), (1, 6, 6)
        ),
        "deepinv_phase_retrieval": DeepinvOperator(
            dphysics.PhaseRetrieval(
                dphysics.CompressedSensing(
                    m=20,
                    img_size=(1, 4, 4),
                    dtype=torch.float64,
                    rng=torch.Generator().manual_seed(2),
                )
            ),
            (1, 4, 4),
        ),
    }
    return {name: (op, op.in_shape) for name, op in ops.items()}
