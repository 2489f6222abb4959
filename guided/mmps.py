r"""Moment matching posterior sampling (MMPS).

The Gaussian approximation :math:`p(x \mid x_t) \approx \mathcal{N}(\hat x, V_t)` with the
*Tweedie covariance*

.. math:: V_t = \operatorname{Cov}[x \mid x_t] = \gamma_t\, J, \qquad
    J = \frac{\partial \hat x}{\partial x_t}, \qquad \gamma_t = \frac{\sigma_t^2}{\alpha_t}

(for :math:`x_t = \alpha_t x + \sigma_t \varepsilon`) gives, for a linear operator,
:math:`p(y \mid x_t) \approx \mathcal{N}(A \hat x, \Sigma_t)` with :math:`\Sigma_t = \sigma_y^2
I + \gamma_t A J A^\top`, and treating :math:`V_t` as constant in :math:`x_t`, the likelihood
score

.. math:: g = J^\top A^\top u, \qquad \Sigma_t\, u = y - A \hat x.

:math:`\Sigma_t` is never formed: conjugate gradients (``iterations`` of them, per sample)
solve for :math:`u`, each product :math:`\Sigma_t w` costing one vector-Jacobian product
through the network. For a Gaussian prior :math:`\hat x` is affine in :math:`x_t`, the
approximation is exact and, once CG has converged (at most :math:`\dim y` iterations), the
guided denoiser is the exact :math:`E[x \mid x_t, y]` whatever the prior's covariance, where
:class:`~guided.PiGDM` is exact only for :math:`\mathcal{N}(\mu, v I)` (tested).

**Cost.** ``iterations`` + 1 vector-Jacobian products per call: one per CG iteration and the
final :math:`J^\top A^\top u` (which the :class:`~guided.GuidedDenoiser` pools with its other
terms'); each is counted in the cost.

**Where we depart from the authors.** Like the authors' code (``PosteriorDenoiser`` in
``priors/diffusion.py`` of ``francois-rozet/diffusion-priors``) and azula's ``MMPSDenoiser``,
:math:`J w` is computed as the vector-Jacobian product :math:`J^\top w`: the Jacobian of an
exact posterior mean is symmetric (:math:`\gamma_t J` is a covariance), a network's only
approximately. Their solver stops after ``maxiter = 1`` CG iteration by default (3 in their
MRI experiment; azula's default is one GMRES iteration); ours defaults to 3 and, as theirs,
does not check convergence. Only linear operators: the authors
linearise a nonlinear :math:`A` at :math:`\hat x`, which needs its Jacobian-vector product;
our operators give only vector-Jacobian products, so a nonlinear operator is refused with a
pointer to DPS.

References:
    | Learning Diffusion Priors from Observations by Expectation Maximization
    | (Rozet, Andry, Lanusse & Louppe, NeurIPS 2024) https://arxiv.org/abs/2405.13712
"""

from __future__ import annotations

import torch

from torch import Tensor

import checks

from guided.guidance import Guidance, check_measurement, check_structure
from operators import LinearOperator, cg
from priors import Schedule, record
from priors.tweedie import append_dims, likelihood_gain

__all__ = ["MMPS", "tweedie_covariance_product", "tweedie_gamma", "tweedie_solve"]


def tweedie_gamma(t: Tensor, schedule: Schedule, like: Tensor) -> Tensor:
    r""":math:`\gamma_t = \sigma_t^2 / \alpha_t` (0 at pure noise:
    :func:`priors.tweedie.likelihood_gain`), shaped to multiply rows of ``like``."""
    return append_dims(likelihood_gain(*schedule(t)).to(like.dtype), like.ndim)


def tweedie_covariance_product(x_t: Tensor, x_hat: Tensor, gamma: Tensor, w: Tensor) -> Tensor:
    r""":math:`V_t w = \gamma_t J^\top w`, one vector-Jacobian product through the network
    (counted); ``x_hat`` must carry the graph from ``x_t``, which is kept for later products."""
    (jw,) = torch.autograd.grad(x_hat, x_t, w, retain_graph=True)
    record(vjp_rows=x_t.shape[0])
    return gamma * jw


def tweedie_solve(
    op: LinearOperator,
    sigma_y: float,
    x_t: Tensor,
    x_hat: Tensor,
    gamma: Tensor | float,
    residual: Tensor,
    iterations: int,
) -> Tensor:
    r""":math:`u` with :math:`\Sigma_t u = r`, :math:`\Sigma_t = \sigma_y^2 I + A V_t A^\top`
    (see the module), per row, by ``iterations`` conjugate-gradient steps, each one
    vector-Jacobian product through the network (counted); ``x_hat`` must carry the graph from
    ``x_t``, which is kept."""

    def matvec(w: Tensor) -> Tensor:  # Sigma_t w
        covariance = tweedie_covariance_product(x_t, x_hat, gamma, op.adjoint(w))
        return sigma_y**2 * w + op(covariance)

    return cg(matvec, residual, iterations=iterations)


class MMPS(Guidance):
    r"""MMPS likelihood term (see the module).

    Arguments:
        op: A linear operator.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level (0 allowed).
        iterations: Conjugate-gradient iterations, each one vector-Jacobian product.
    """

    def __init__(self, op: LinearOperator, y: Tensor, sigma_y: float, iterations: int = 3) -> None:
        super().__init__()
        check_structure(op, LinearOperator, "MMPS", "adjoint", "use DPS or a derivative-free rule")
        self.y = check_measurement(op, y, sigma_y)
        self.op, self.sigma_y = op, float(sigma_y)
        self.iterations = checks.integer(iterations, "iterations", low=1)

    def vector(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        op, gamma = self.op, tweedie_gamma(t, schedule, x_hat)
        residual = self.y.to(x_hat.dtype) - op(x_hat.detach())
        u = tweedie_solve(op, self.sigma_y, x_t, x_hat, gamma, residual, self.iterations)
        return op.adjoint(u)
