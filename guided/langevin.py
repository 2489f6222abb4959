r"""Langevin dynamics on a Gaussian-coupled likelihood: the inner loop of DAPS and PnP-DM.

Both methods sample, at a coupling level :math:`\rho`, the density

.. math:: \pi(x) \propto \exp\left(-\frac{\lVert x - c \rVert^2}{2 \rho^2}
    - \frac{\lVert y - A(x) \rVert^2}{2 \tau^2}\right)

around a centre :math:`c` (DAPS: the clean estimate; PnP-DM: the current sample), by the
unadjusted Langevin algorithm :math:`x \leftarrow x + \eta \nabla \log \pi(x) + \sqrt{2 \eta}
\, z` from :math:`c`. It needs the operator's vector-Jacobian products only (no network
evaluation). A step is stable only below 2 over the target's curvature,
:math:`1 / \rho^2 + \lVert A \rVert^2 / \tau^2` for a linear operator (:math:`\lVert A
\rVert^2` by power iteration, once per operator); :meth:`LangevinLikelihood.check` refuses a
larger one with an error rather than letting the chain blow up. A nonlinear operator's
curvature is not known, so only the coupling term's part is checked.

References:
    | Exponential Convergence of Langevin Distributions and Their Discrete Approximations
    | (Roberts & Tweedie, Bernoulli 1996) https://doi.org/10.2307/3318418
"""

from __future__ import annotations

import math

import torch

from torch import Tensor

from operators import LinearOperator, Operator
from priors import GeneratorLike, randn

__all__ = ["LangevinLikelihood", "squared_norm"]


def squared_norm(op: Operator, like: Tensor) -> float:
    r""":math:`\lVert A \rVert^2`, the largest eigenvalue of :math:`A^\top A`, by 50 power
    iterations from a fixed start, with a 1% margin, on ``like``'s device and dtype; 0 for a
    nonlinear operator (whose curvature is not known). The step-size checks of DAPS, PnP-DM
    and PnP-Flow read it."""
    if not isinstance(op, LinearOperator):
        return 0.0
    g = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn((1, *op.in_shape), generator=g, dtype=torch.float64)
    v = v.to(like.device, like.dtype)
    for _ in range(50):
        v = op.gram(v)
        norm = v.norm()
        if norm == 0:
            break
        v = v / norm
    return float(op.gram(v).norm()) * 1.01


class LangevinLikelihood:
    r"""The coupled likelihood of the module for one operator and measurement.

    Arguments:
        op: A differentiable operator.
        y: The measurement (checked by the caller).
        tau: :math:`\tau > 0`, the likelihood's standard deviation.
    """

    def __init__(self, op: Operator, y: Tensor, tau: float) -> None:
        self.op, self.y, self.tau = op, y, tau
        self._norm: float | None = None

    def squared_norm(self, like: Tensor) -> float:
        """:func:`squared_norm` of the operator, computed once."""
        if self._norm is None:
            self._norm = squared_norm(self.op, like)
        return self._norm

    def check(self, step_size: float, level: float, like: Tensor, where: str, advice: str) -> None:
        r"""Raises a ``ValueError`` when ``step_size`` is not below 2 over the target's
        curvature at coupling level ``level``; ``where`` names the method and time,
        ``advice`` says what to change."""
        curvature = 1 / level**2 + self.squared_norm(like) / self.tau**2
        if step_size * curvature >= 2:
            raise ValueError(
                f"{where}: the Langevin step {step_size:.3g} is unstable: the target's "
                f"curvature is 1 / level^2 + |A|^2 / tau^2 = {curvature:.3g} (coupling level "
                f"{level:.3g}, tau {self.tau:.3g}), so the step must stay below "
                f"{2 / curvature:.3g}: {advice}"
            )

    def sample(
        self, centre: Tensor, level: float, step_size: float, steps: int, generator: GeneratorLike
    ) -> Tensor:
        r"""``steps`` Langevin steps of size ``step_size`` on the module's target from
        ``centre`` at coupling level ``level``."""
        op, y = self.op, self.y.to(centre.dtype)
        x = centre
        noise = math.sqrt(2 * step_size)
        for _ in range(steps):
            score = (centre - x) / level**2 + op.vjp(x, y - op(x)) / self.tau**2
            z = randn(x.shape, generator, dtype=x.dtype, device=x.device)
            x = x + step_size * score + noise * z
        return x
