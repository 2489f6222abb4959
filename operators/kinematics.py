r"""Forward kinematics of a planar kinematic chain (the measurement model of InPose-style
pose estimation from a few position sensors).

A chain of :math:`n` links with lengths :math:`l_k` hangs from the origin; the signal is
the vector of relative joint angles in prior units, :math:`\theta_k = s\, x_k` (``angle_scale``
:math:`s`, so :math:`x \in [-1, 1]` covers :math:`[-s, s]`). With absolute angles
:math:`\phi_k = \sum_{j \leq k} \theta_j`, the joints' positions are

.. math:: p_0 = 0, \qquad p_{k+1} = p_k + l_k (\cos \phi_k, \sin \phi_k),

and the measurement is the positions of the chosen points (sensors), :math:`(m, 2)`. The
map is smooth, so gradient guidance applies, one term per sensor if each has its own
noise and weight (:class:`PlanarKinematics` with one point each).

References:
    | InPose: zero-shot pose estimation from sparse sensors with diffusion priors
    | (Karnoor & Roy Choudhury, 2025) https://arxiv.org/abs/2510.02043
"""

from __future__ import annotations

import math

from collections.abc import Sequence

import torch

from torch import Tensor

import checks

from operators.base import Operator

__all__ = ["PlanarKinematics"]


class PlanarKinematics(Operator):
    r"""Positions of chosen joints of a planar chain from its joint angles (see the module).

    Arguments:
        lengths: The link lengths :math:`l_1..l_n` (positive).
        points: The measured points, indices in :math:`1..n` (:math:`n`: the end
            effector); all joints by default.
        angle_scale: Radians per prior unit.
    """

    def __init__(
        self,
        lengths: Sequence[float],
        points: Sequence[int] | None = None,
        angle_scale: float = math.pi,
    ) -> None:
        if isinstance(lengths, Tensor):
            lengths = lengths.tolist()
        lengths = [checks.number(v, "lengths", low=0, open_low=True) for v in lengths]
        n = len(lengths)
        if n < 1:
            raise ValueError("lengths must hold at least one link length")
        points = (
            list(range(1, n + 1))
            if points is None
            else [checks.integer(p, "points", low=1, high=n) for p in points]
        )
        if not points or not all(1 <= p <= n for p in points) or len(set(points)) != len(points):
            raise ValueError(f"points must be distinct indices in 1..{n}, got {points}")
        angle_scale = checks.number(angle_scale, "angle_scale", low=0, open_low=True)
        super().__init__((n,), (len(points), 2))
        self.register_buffer("lengths", torch.tensor(lengths, dtype=torch.float64))
        self.points, self.angle_scale = points, float(angle_scale)

    def joints(self, x: Tensor) -> Tensor:
        r"""All joint positions :math:`p_0..p_n`, :math:`(B, n + 1, 2)`."""
        phi = torch.cumsum(self.angle_scale * x, dim=-1)  # absolute angles (B, n)
        links = self.lengths.to(x.dtype)[:, None] * torch.stack([phi.cos(), phi.sin()], -1)
        positions = torch.cumsum(links, dim=1)  # (B, n, 2)
        return torch.cat([torch.zeros_like(positions[:, :1]), positions], dim=1)

    def apply(self, x: Tensor) -> Tensor:
        return self.joints(x)[:, self.points]
