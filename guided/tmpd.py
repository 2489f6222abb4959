r"""Tweedie moment projected diffusion (TMPD), with the authors' row-sum approximation.

TMPD starts from the same Gaussian approximation as :class:`~guided.MMPS`,
:math:`p(y \mid x_t) \approx \mathcal{N}(A \hat x, \sigma_y^2 I + \gamma_t A J A^\top)` with
the Tweedie covariance :math:`\gamma_t J` (:math:`J = \partial \hat x / \partial x_t`,
:math:`\gamma_t = \sigma_t^2 / \alpha_t`), but does not solve with the full matrix: the
authors' code replaces :math:`A J A^\top` by the diagonal matrix of its row sums,

.. math:: \Sigma_t \approx \sigma_y^2 I + \gamma_t \operatorname{diag}(A J A^\top \mathbf 1),
    \qquad g = J^\top A^\top \frac{y - A \hat x}{\sigma_y^2 + \gamma_t A J A^\top \mathbf 1},

one extra vector-Jacobian product per step whatever the operator (two in all, each counted),
against MMPS's one per conjugate-gradient iteration. The row sums equal the diagonal where
:math:`A J A^\top` is diagonal, e.g. a Gaussian prior with independent pixels observed
through a mask; there TMPD is the exact :math:`E[x \mid x_t, y]`. Where the observed pixels
are correlated under the prior it is not, and differs from MMPS (both tested).

**Where we depart from the authors.** Their torch code (``TweedieMomentProjection`` in
``guided_diffusion/condition_methods.py`` of ``bb515/tmpdtorch``) multiplies :math:`A J
A^\top` by :math:`A \mathbf 1_x` (the operator applied to an image of ones) rather than by the
measurement-space :math:`\mathbf 1`; the two agree when every row of :math:`A` sums to one
(masks, average-pooling super-resolution, normalised blurs). We use :math:`\mathbf 1`, as azula's
``TMPDenoiser`` does, so that the row sums are those of :math:`A J A^\top` for every operator.
As in both, :math:`J w` is computed as :math:`J^\top w` (symmetric for an exact posterior
mean). Row sums of a covariance can be negative where pixels anti-correlate; the variance
is then floored at :math:`\sigma_y^2` (the row sum clamped at 0), which the authors do not
do; with :math:`\sigma_y = 0` such a row then divides by zero and the guided denoiser raises
(entries where both the residual and the variance are zero, as a mask's unobserved pixels,
give no pull).

References:
    | Tweedie Moment Projected Diffusions for Inverse Problems
    | (Boys, Girolami, Pidstrigach, Reich, Mosca & Akyildiz, TMLR 2024)
    | https://arxiv.org/abs/2310.06721
"""

from __future__ import annotations

import torch

from torch import Tensor

from guided.guidance import Guidance, check_measurement, check_structure
from guided.mmps import tweedie_covariance_product, tweedie_gamma
from operators import LinearOperator
from priors import Schedule

__all__ = ["TMPD"]


class TMPD(Guidance):
    r"""TMPD likelihood term (see the module).

    Arguments:
        op: A linear operator.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level (0 allowed).
    """

    def __init__(self, op: LinearOperator, y: Tensor, sigma_y: float) -> None:
        super().__init__()
        check_structure(op, LinearOperator, "TMPD", "adjoint", "use DPS or a derivative-free rule")
        self.y = check_measurement(op, y, sigma_y)
        self.op, self.sigma_y = op, float(sigma_y)

    def vector(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        op, gamma = self.op, tweedie_gamma(t, schedule, x_hat)
        residual = self.y.to(x_hat.dtype) - op(x_hat.detach())
        ones = torch.ones_like(residual)
        row_sums = op(tweedie_covariance_product(x_t, x_hat, gamma, op.adjoint(ones)))
        variance = self.sigma_y**2 + row_sums.clamp_min(0)
        # 0 / 0 where the operator's output is identically zero (a mask's unobserved pixels,
        # with sigma_y = 0): no information, no pull; a residual over a zero variance stays
        # infinite and the guided denoiser raises
        unobserved = (residual == 0) & (variance == 0)
        return op.adjoint(torch.where(unobserved, 0.0, residual / variance))
