r"""Zeroth-order likelihood guidance: DPS with a Gaussian-smoothing gradient estimate.

DPS needs :math:`\nabla_{\hat x} \lVert y - A(\hat x) \rVert^2`; for an operator without
derivatives it is replaced by the gradient of the Gaussian smoothing
:math:`L_\mu(\hat x) = E_u\, \lVert y - A(\hat x + \mu u) \rVert^2`, :math:`u \sim
\mathcal{N}(0, I)`, estimated with :math:`q` antithetic queries (Nesterov & Spokoiny 2017):

.. math:: \widehat{\nabla L_\mu}(\hat x) = \frac{1}{q} \sum_{i=1}^{q}
    \frac{L(\hat x + \mu u_i) - L(\hat x - \mu u_i)}{2\mu}\, u_i,

so :math:`v = -\frac12 \widehat{\nabla L_\mu}` takes the place of :math:`A^\top (y - A\hat x)`
in :class:`~guided.DPS` (normalised by :math:`\zeta / \lVert y - A(\hat x) \rVert`, or divided
by :math:`\sigma_y^2` for the likelihood score), and the network's vector-Jacobian product
carries it to :math:`x_t` as usual (the DPS-GSG baseline of Zheng et al.). The estimate is
unbiased for :math:`\nabla L_\mu`, which differs from :math:`\nabla L` by :math:`O(\mu^2)`
where :math:`L` is smooth and exists where it is not (quantization, JPEG); its variance
grows like :math:`d / q`. Cost per call and row: :math:`2q + 1` operator calls and one VJP.

References:
    | Random Gradient-Free Minimization of Convex Functions (Nesterov & Spokoiny, 2017)
    | https://doi.org/10.1007/s10208-015-9296-2
    | Ensemble Kalman Diffusion Guidance (Zheng et al., 2024), baseline DPS-GSG
    | https://arxiv.org/abs/2409.20175
"""

from __future__ import annotations

import torch

from torch import Tensor

from guided.enkg import warn_if_differentiable
from guided.guidance import Guidance, check_measurement, check_number
from operators import Operator, batch_dot
from priors import Schedule, randn
from priors.tweedie import append_dims

__all__ = ["ZerothOrder"]


class ZerothOrder(Guidance):
    r"""DPS with a zeroth-order gradient (see the module).

    Arguments:
        op: Any operator (a black box is fine).
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The noise level (used when ``zeta`` is None).
        zeta: DPS's normalised step; None for the likelihood score.
        queries: The number :math:`q` of antithetic query pairs per call and row.
        smoothing: The smoothing radius :math:`\mu > 0`.
        generator: The stream of the query directions.
        weight: A multiplier of the term.
    """

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float,
        zeta: float | None = 1.0,
        queries: int = 32,
        smoothing: float = 0.1,
        generator: torch.Generator | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        warn_if_differentiable(op, "ZerothOrder")
        self.y = check_measurement(op, y, sigma_y)
        if zeta is None and not sigma_y > 0:
            raise ValueError("zeta=None is the likelihood score and needs sigma_y > 0")
        if zeta is not None and not check_number(zeta, "zeta") >= 0:
            raise ValueError(f"zeta must be non-negative, got {zeta}")
        if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
            raise ValueError(f"queries must be a positive integer, got {queries!r}")
        if not check_number(smoothing, "smoothing") > 0:
            raise ValueError(f"smoothing must be > 0, got {smoothing}")
        self.op, self.sigma_y, self.zeta = op, float(sigma_y), zeta
        self.queries, self.smoothing, self.weight = queries, float(smoothing), float(weight)
        self.generator = generator

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        r""":math:`\lVert y - A(x) \rVert^2` per row; checks the operator's output."""
        out = self.op(x)
        if not bool(torch.isfinite(out).all()):
            raise FloatingPointError(f"{type(self.op).__name__} returned NaN or Inf")
        r = (y - out).flatten(1)
        return batch_dot(r, r)

    def vector(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        x = x_hat.detach()
        b, q, mu = x.shape[0], self.queries, self.smoothing
        y = self.y.to(x.dtype).expand(b, *self.y.shape[1:])
        u = randn((q, *x.shape), self.generator, dtype=x.dtype, device=x.device)
        probes = torch.cat([x[None] + mu * u, x[None] - mu * u]).flatten(0, 1)
        losses = self.loss(probes, y.repeat(2 * q, *[1] * (y.ndim - 1))).view(2, q, b)
        slope = (losses[0] - losses[1]) / (2 * mu)  # (q, b)
        gradient = (append_dims(slope, u.ndim) * u).mean(0)
        direction = -0.5 * gradient
        if self.zeta is None:
            return self.weight * direction / self.sigma_y**2
        norm = self.loss(x, y).clamp_min(1e-30).sqrt()
        return self.weight * self.zeta * direction / append_dims(norm, x.ndim)
