"""The measurements of the black-box app: quantisation, JPEG and the ``ink`` profile (a
numpy simulator), each an operator built for an image shape; :class:`Counted` counts the
rows an operator is applied to, for the cost tables."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from omegaconf import DictConfig
from torch import Tensor

import operators

__all__ = ["Counted", "build_task", "ink_profile"]


class Counted(operators.Operator):
    """An operator that counts the rows it is applied to (for the cost tables)."""

    def __init__(self, op: operators.Operator) -> None:
        super().__init__(op.in_shape, op.out_shape)
        self.op, self.rows = op, 0
        self.differentiable = op.differentiable

    def apply(self, x: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return self.op(x)


def ink_profile(threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    """The black box of the ``ink`` task: per image :math:`(1, H, W)`, the counts of pixels
    above ``threshold`` in each row, then in each column, :math:`(H + W,)`."""

    def simulate(x: np.ndarray) -> np.ndarray:
        inked = x[:, 0] > threshold
        return np.concatenate([inked.sum(2), inked.sum(1)], axis=1).astype(np.float64)

    return simulate


def build_task(name: str, cfg: DictConfig, shape: tuple[int, ...]) -> operators.Operator:
    if name == "quantize":
        return operators.Quantization(shape, levels=int(cfg.quantize.levels))
    if name == "jpeg":
        return operators.JPEG(shape, quality=int(cfg.jpeg.quality))
    _, h, w = shape
    return operators.BlackBox(ink_profile(float(cfg.ink.threshold)), shape, (h + w,))
