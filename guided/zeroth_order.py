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

The query directions come from the sampler's generator (:func:`priors.run_generator`): with
one generator per row, row :math:`i`'s directions come from generator :math:`i`, so a row's
sample is the same alone or in a batch, and the same seed gives the same sample twice.

References:
    | Random Gradient-Free Minimization of Convex Functions (Nesterov & Spokoiny, 2017)
    | https://doi.org/10.1007/s10208-015-9296-2
    | Ensemble Kalman Diffusion Guidance (Zheng et al., 2024), baseline DPS-GSG
    | https://arxiv.org/abs/2409.20175
"""

from __future__ import annotations

from typing import ClassVar

import torch

from torch import Tensor

import checks

from guided.dps import DPS
from guided.enkg import warn_if_differentiable
from operators import Operator, batch_dot
from priors import randn_blocks, run_generator
from priors.tweedie import append_dims

__all__ = ["ZerothOrder"]


class ZerothOrder(DPS):
    r"""DPS with a zeroth-order gradient (see the module): the direction of
    :meth:`DPS.residual_and_direction` estimated
    by Gaussian smoothing instead of the operator's vector-Jacobian product.

    Arguments:
        op: Any operator (a black box is fine).
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The noise level (used when ``zeta`` is None; None when unknown).
        zeta: DPS's normalised step; None for the likelihood score.
        queries: The number :math:`q` of antithetic query pairs per call and row.
        smoothing: The smoothing radius :math:`\mu > 0`.
        weight: A multiplier of the term.

    The query directions are drawn from the generator(s) of the sampler run that calls the
    term (torch's default stream outside a run); there is no stream of the term's own.
    """

    differentiates_operator: ClassVar[bool] = False

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float | None,
        zeta: float | None = 1.0,
        queries: int = 32,
        smoothing: float = 0.1,
        weight: float = 1.0,
    ) -> None:
        warn_if_differentiable(op, "ZerothOrder")
        super().__init__(op, y, sigma_y, zeta, weight)
        self.queries = checks.integer(queries, "queries", low=1)
        self.smoothing = checks.number(smoothing, "smoothing", low=0, open_low=True)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        r""":math:`\lVert y - A(x) \rVert^2` per row; checks the operator's output."""
        out = self.op(x)
        if not bool(torch.isfinite(out).all()):
            raise FloatingPointError(f"{type(self.op).__name__} returned NaN or Inf")
        r = (y - out).flatten(1)
        return batch_dot(r, r)

    def residual_and_direction(self, x_hat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The residual from one forward pass and the direction from :meth:`direction`."""
        residual = self.y.to(x_hat.dtype) - self.op(x_hat)
        weighted = self.residual_weights() * residual
        return residual, weighted, self.direction(x_hat, weighted)

    def direction(self, x_hat: Tensor, weighted: Tensor) -> Tensor:
        r""":math:`-\frac12 \widehat{\nabla L_\mu}(\hat x)` from :math:`2q` queries."""
        if not bool(torch.isfinite(weighted).all()):
            raise FloatingPointError(f"{type(self.op).__name__} returned NaN or Inf")
        x, q, mu = x_hat, self.queries, self.smoothing
        y = self.y.to(x.dtype).expand(x.shape[0], *self.y.shape[1:])
        # (B, q, *) so that each row's directions come from its own generator
        shape = (x.shape[0], q, *x.shape[1:])
        u = randn_blocks(shape, run_generator(), dtype=x.dtype, device=x.device)
        u = u.transpose(0, 1)  # (q, B, *)
        probes = torch.cat([x[None] + mu * u, x[None] - mu * u]).flatten(0, 1)
        losses = self.loss(probes, y.repeat(2 * q, *[1] * (y.ndim - 1))).view(2, q, -1)
        slope = (losses[0] - losses[1]) / (2 * mu)  # (q, b)
        return -0.5 * (append_dims(slope, u.ndim) * u).mean(0)
