r"""Pseudo-inverse guided diffusion (:math:`\Pi`\ GDM).

With the Gaussian approximation :math:`p(x \mid x_t) \approx \mathcal{N}(\hat x, r_t^2 I)`
and a linear operator, :math:`p(y \mid x_t) \approx \mathcal{N}(A \hat x, r_t^2 A A^\top +
\sigma_y^2 I)`, whose score is

.. math:: g = J^\top v, \qquad v = A^\top (r_t^2 A A^\top + \sigma_y^2 I)^{-1}
    (y - A \hat x), \qquad r_t^2 = \frac{\sigma_t^2}{\alpha_t^2 + \sigma_t^2}

(the posterior variance of unit-variance data). For a Gaussian prior :math:`\mathcal{N}(\mu,
I)` the approximation is exact, so the guided denoiser is the exact
:math:`E[x \mid x_t, y]`: the tests check this.

**The data variance.** Data of per-pixel variance :math:`v` has the posterior variance

.. math:: r_t^2 = \frac{v\, \sigma_t^2}{v\, \alpha_t^2 + \sigma_t^2},

which tends to :math:`v` at high noise and to :math:`\bar\sigma_t^2 = \sigma_t^2 / \alpha_t^2`
at low noise whatever :math:`v`; with ``variance=v`` the term uses it, and for a prior
:math:`\mathcal{N}(\mu, v I)` it is again exact (tested). It was meant as a step size that
carries across budgets where the ``weight`` does not (a weight lengthens the low-noise steps
too, where :math:`r_t^2` is already right). On the uniform time grid it does not carry
either: on digits box inpainting, tuned at 100 steps, the weight (7.5) gives 26.1 dB at 100
steps and 9.7 at 25, the variance (0.02) 25.0 and 16.1. On deepinv's grid
(:func:`~guided.time_grid` with ``"linear_beta"``, finer at high noise) it does, on digits SR x4:
:math:`v = 0.03` gives 25.1 and 24.8 dB at 25 and 100 steps on the tuning images
(``docs/methods/pigdm.md``). This is our parameterisation; the paper uses :math:`v = 1` and a
weight, and deepinv's ``PiGDMDataFidelity`` the :math:`r_t^2` of unit-variance data on images
in [0, 1], which is :math:`v = 4` in our [-1, 1] units, with a weight: deepinv's PiGDM
(its DPS loop with that data fidelity, which clamps nothing) with weight :math:`w` is this
term with ``variance=4`` and weight :math:`w` under :class:`~guided.DDPM` on the
``"linear_beta"`` grid, step for step given the same noise where its conjugate-gradient
solve (3 iterations by default) is exact, as for inpainting and SR x4 where :math:`A A^\top`
is a multiple of the identity (``tests/experiments/test_peers.py``).

References:
    | Pseudoinverse-Guided Diffusion Models for Inverse Problems (Song et al., 2023)
    | https://openreview.net/forum?id=9_gsMA8MRKQ
"""

from __future__ import annotations

import torch

from torch import Tensor

import checks

from guided.guidance import Guidance, check_measurement, check_structure
from operators import LinearOperator, SVDOperator, cg
from priors import Schedule
from priors.tweedie import append_dims

__all__ = ["PiGDM"]


class PiGDM(Guidance):
    r""":math:`\Pi`\ GDM likelihood term (see the module).

    Arguments:
        op: A linear operator (closed form when it is an SVD operator).
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level (0 allowed).
        weight: A multiplier of the term.
        iterations: Conjugate-gradient iterations for operators without an SVD.
        variance: The data's per-pixel variance :math:`v > 0` in :math:`r_t^2` (see the module;
            1, the paper's, by default; keyword only).
    """

    def __init__(
        self,
        op: LinearOperator,
        y: Tensor,
        sigma_y: float,
        weight: float = 1.0,
        iterations: int = 50,
        *,
        variance: float = 1.0,
    ) -> None:
        super().__init__()
        check_structure(
            op, LinearOperator, "PiGDM", "adjoint and pseudo-inverse",
            "use DPS or a derivative-free rule",
        )  # fmt: skip
        self.y = check_measurement(op, y, sigma_y)
        self.op, self.sigma_y = op, float(sigma_y)
        self.weight = checks.number(weight, "weight", low=0)
        self.iterations = checks.integer(iterations, "iterations", low=1)
        self.variance = checks.number(variance, "variance", low=0, open_low=True)

    def vector(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        x_hat = x_hat.detach()
        alpha_t, sigma_t = schedule(t)
        v = self.variance
        r2 = (v * sigma_t**2 / (v * alpha_t**2 + sigma_t**2)).to(x_hat.dtype)
        residual = self.y.to(x_hat.dtype) - self.op(x_hat)
        op = self.op
        if isinstance(op, SVDOperator):
            z = op.Ut(residual)
            s = op.singulars.to(z.device, z.dtype)
            denominator = append_dims(r2, z.ndim) * s**2 + self.sigma_y**2
            observed = op.observed().to(z.device)
            factor = torch.where(observed, s / denominator.where(observed, 1), 0)
            return self.weight * op.V(factor * z)
        r2y = append_dims(r2, residual.ndim)

        def matvec(u: Tensor) -> Tensor:
            return r2y * op(op.adjoint(u)) + self.sigma_y**2 * u

        u = cg(matvec, residual, iterations=self.iterations)
        return self.weight * op.adjoint(u)
