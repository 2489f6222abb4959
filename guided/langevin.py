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

Two options of the DAPS authors' latent settings (``cores/mcmc.py`` and ``LatentWrapper`` of
``zhangbingliang2019/DAPS``): ``momentum`` :math:`m \in [0, 1)` runs their damped Hamiltonian
dynamics, :math:`v \leftarrow m v + \sqrt\eta \nabla \log \pi + \sqrt{2(1 - m)}\, z`,
:math:`x \leftarrow x + \sqrt\eta\, v` from a standard normal :math:`v` (at :math:`m = 0` the
Langevin step, draw for draw); as a heavy-ball iteration :math:`x_{k+1} = x_k + m (x_k -
x_{k-1}) + \eta \nabla \log \pi + \ldots` it is stable below :math:`2 (1 + m)` over the
curvature, which the check uses. ``clip`` :math:`c` clamps each entry of the data term's
gradient :math:`J_A^\top (y - A(x))` to :math:`[-c, c]` before it is divided by
:math:`\tau^2` (their clamp of the gradient of :math:`\lVert A(x) - y \rVert^2` to
:math:`[-1, 1]` is :math:`c = 1/2` here).

References:
    | Exponential Convergence of Langevin Distributions and Their Discrete Approximations
    | (Roberts & Tweedie, Bernoulli 1996) https://doi.org/10.2307/3318418
"""

from __future__ import annotations

import math

import torch

from torch import Tensor

import checks

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
        momentum: The damped Hamiltonian dynamics' :math:`m \in [0, 1)` (0: Langevin).
        clip: The bound :math:`c > 0` on each entry of the data term's gradient (None: none).
    """

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        tau: float,
        *,
        momentum: float = 0.0,
        clip: float | None = None,
    ) -> None:
        self.op, self.y, self.tau = op, y, tau
        self.momentum = checks.number(momentum, "momentum", low=0, high=1, open_high=True)
        self.clip = None if clip is None else checks.number(clip, "clip", low=0, open_low=True)
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
        bound = 2 * (1 + self.momentum)
        if step_size * curvature >= bound:
            raise ValueError(
                f"{where}: the Langevin step {step_size:.3g} is unstable: the target's "
                f"curvature is 1 / level^2 + |A|^2 / tau^2 = {curvature:.3g} (coupling level "
                f"{level:.3g}, tau {self.tau:.3g}), so the step must stay below "
                f"{bound / curvature:.3g}: {advice}"
            )

    def sample(
        self, centre: Tensor, level: float, step_size: float, steps: int, generator: GeneratorLike
    ) -> Tensor:
        r"""``steps`` Langevin steps of size ``step_size`` on the module's target from
        ``centre`` at coupling level ``level``."""
        op, y, m = self.op, self.y.to(centre.dtype), self.momentum
        x = centre
        root = math.sqrt(step_size)
        noise = math.sqrt(2 * (1 - m))
        v = randn(x.shape, generator, dtype=x.dtype, device=x.device) if m > 0 and steps else 0
        for _ in range(steps):
            out, pullback = op.linearize(x)  # one forward pass for the residual and its VJP
            data = pullback(y - out)
            if self.clip is not None:
                data = data.clamp(-self.clip, self.clip)
            score = (centre - x) / level**2 + data / self.tau**2
            z = randn(x.shape, generator, dtype=x.dtype, device=x.device)
            if m == 0:  # Langevin, written out: the same arithmetic as before momentum existed
                x = x + step_size * score + math.sqrt(2 * step_size) * z
                continue
            v = m * v + root * score + noise * z
            x = x + root * v
        return x
