r"""M-steps of expectation-maximisation for operators with unknowns (see :mod:`guided.em`).

An M-step updates the unknowns :math:`\theta` of an :class:`operators.UnknownOperator` in place,

.. math:: \theta \leftarrow \arg\min_{\theta \in \mathcal{C}} \frac{1}{2B\sigma_y^2}
    \sum_b \lVert y - A_\theta \hat x_b \rVert^2 + \frac{\lambda}{2} \lVert \theta \rVert^2
    + \frac{\mu}{2} \theta^\top R\, \theta,

from the denoised estimates :math:`\hat x_b` of the :math:`B` rows, with :math:`R` the
operator's penalty and :math:`\mathcal{C}` its constraint set:
:class:`LeastSquaresMStep` exactly (accelerated projected gradient on the quadratic, for
operators linear in :math:`\theta`), :class:`GradientMStep` by a few projected Adam steps
(any differentiable operator), :class:`FitMStep` by the operator's own estimator where it has
one (the filters of :class:`operators.ConvolutiveTransfer`, too many for a Jacobian built
column by column).
"""

from __future__ import annotations

import abc
import math

from typing import Any

import torch

from torch import Tensor

import checks

from operators import UnknownOperator

__all__ = ["FitMStep", "GradientMStep", "LeastSquaresMStep", "MStep", "flat", "unknowns"]


def unknowns(op: UnknownOperator) -> list[torch.nn.Parameter]:
    return [p for p in op.parameters() if p.requires_grad]


def flat(op: UnknownOperator) -> Tensor:
    return torch.cat([p.detach().to(torch.float64).flatten() for p in unknowns(op)])


@torch.no_grad()
def _assign(op: UnknownOperator, theta: Tensor) -> None:
    start = 0
    for p in unknowns(op):
        p.copy_(theta[start : start + p.numel()].view_as(p))
        start += p.numel()


def _projected(op: UnknownOperator, theta: Tensor) -> Tensor:
    """:math:`\\Pi_{\\mathcal{C}}(\\theta)` through the operator's own projection."""
    _assign(op, theta)
    op.project()
    return flat(op)


class MStep(abc.ABC):
    r"""Updates an operator's unknowns in place given denoised estimates :math:`\hat x`
    :math:`(B, *in\_shape)` of the same measurement :math:`y` :math:`(1, *out\_shape)` with
    noise level :math:`\sigma_y > 0`."""

    @abc.abstractmethod
    def __call__(self, op: UnknownOperator, x_hat: Tensor, y: Tensor, sigma_y: float) -> None: ...

    def check(self, op: UnknownOperator) -> None:
        """Raises if this M-step cannot estimate ``op``'s unknowns (called when a problem is
        set up, before any sampling)."""
        if not isinstance(op, UnknownOperator):
            raise TypeError(f"an M-step estimates an operators.UnknownOperator, got {type(op)}")


class LeastSquaresMStep(MStep):
    r"""The exact M-step of an operator linear in its unknowns,
    :math:`A_\theta x = J(x)\,\theta`: the quadratic
    :math:`\frac{1}{2}\theta^\top G \theta - c^\top \theta` with
    :math:`G = \frac{1}{B\sigma_y^2}\sum_b J_b^\top J_b + \lambda I + \mu R`,
    :math:`c = \frac{1}{B\sigma_y^2}\sum_b J_b^\top y` (a MAP estimate: :math:`\lambda` and
    :math:`\mu` are prior precisions), minimised over the constraint set by
    accelerated projected gradient (FISTA, step :math:`1/\lVert G \rVert_2`) started from
    the projected unconstrained solution. :math:`J_b` is built column by column (one
    operator application per unknown, vectorised), in float64.

    Arguments:
        reg: The ridge :math:`\lambda \geq 0`.
        penalty: The weight :math:`\mu \geq 0` of the operator's
            :meth:`~operators.UnknownOperator.penalty`.
        iterations: Projected-gradient iterations (stops early once :math:`\theta` moves
            less than ``tol`` relative).
        tol: The relative stopping tolerance.
    """

    def __init__(
        self, reg: float = 0.0, penalty: float = 0.0, iterations: int = 200, tol: float = 1e-9
    ) -> None:
        self.reg = checks.number(reg, "reg", low=0)
        self.penalty = checks.number(penalty, "penalty", low=0)
        self.iterations = checks.integer(iterations, "iterations", low=1)
        self.tol = checks.number(tol, "tol", low=0)

    def jacobian(self, op: UnknownOperator, x: Tensor) -> Tensor:
        r""":math:`J(x)` :math:`(B, N_y, P)` for the current unknowns; raises if the operator
        is not linear in them."""
        params = {name: p for name, p in op.named_parameters() if p.requires_grad}
        theta = flat(op)
        sizes = [p.numel() for p in params.values()]
        x = x.detach().to(torch.float64)

        def apply(flat: Tensor) -> Tensor:
            pieces = flat.split(sizes)
            values = {
                name: piece.view_as(p).to(p.dtype)
                for (name, p), piece in zip(params.items(), pieces, strict=True)
            }
            return torch.func.functional_call(op, values, (x,)).flatten(1)

        basis = torch.eye(len(theta), dtype=torch.float64, device=x.device)
        probes = torch.stack([theta, theta + 1])  # linear maps agree with J at both
        with torch.no_grad():
            columns = torch.func.vmap(apply)(basis)  # (P, B, N_y)
            values = torch.func.vmap(apply)(probes).to(torch.float64)
        jacobian = columns.permute(1, 2, 0)
        rebuilt = torch.einsum("bnp,kp->kbn", jacobian, probes)
        if not torch.allclose(rebuilt, values, rtol=1e-6, atol=1e-8 * (1 + values.abs().max())):
            raise ValueError(
                f"LeastSquaresMStep needs an operator linear in its unknowns; "
                f"{type(op).__name__} is not (use GradientMStep)"
            )
        return jacobian

    @torch.no_grad()
    def __call__(self, op: UnknownOperator, x_hat: Tensor, y: Tensor, sigma_y: float) -> None:
        jacobian = self.jacobian(op, x_hat)
        rows, p = jacobian.shape[0], jacobian.shape[-1]
        y = y.detach().to(torch.float64).flatten(1)
        eye = torch.eye(p, dtype=torch.float64, device=jacobian.device)
        precision = 1 / (rows * sigma_y**2)
        gram = precision * torch.einsum("bnp,bnq->pq", jacobian, jacobian) + self.reg * eye
        if self.penalty:
            gram = gram + self.penalty * op.penalty().to(gram.device)
        linear = precision * torch.einsum("bnp,bn->p", jacobian, y.expand(rows, -1))
        lipschitz = float(torch.linalg.eigvalsh(gram)[-1])
        if not lipschitz > 0:
            return  # the estimates carry no information about the unknowns (x_hat = 0)
        start = torch.linalg.lstsq(gram, linear[:, None]).solution[:, 0]
        theta = z = _projected(op, start)
        momentum = 1.0
        for _ in range(self.iterations):
            step = _projected(op, z - (gram @ z - linear) / lipschitz)
            next_momentum = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
            z = step + (momentum - 1) / next_momentum * (step - theta)
            moved = float((step - theta).norm()) / max(float(step.norm()), 1e-30)
            theta, momentum = step, next_momentum
            if moved < self.tol:
                break
        _assign(op, theta)


class GradientMStep(MStep):
    r"""A few projected Adam steps on the M-step objective of :class:`LeastSquaresMStep`
    (any differentiable operator, also non-linear in :math:`\theta`); the optimiser
    restarts at every M-step.

    Arguments:
        steps: Adam steps per M-step.
        lr: Adam's learning rate.
        reg: The ridge :math:`\lambda \geq 0`.
        penalty: The weight :math:`\mu \geq 0` of the operator's penalty.
    """

    def __init__(
        self, steps: int = 20, lr: float = 1e-2, reg: float = 0.0, penalty: float = 0.0
    ) -> None:
        self.steps = checks.integer(steps, "steps", low=1)
        self.lr = checks.number(lr, "lr", low=0, open_low=True)
        self.reg = checks.number(reg, "reg", low=0)
        self.penalty = checks.number(penalty, "penalty", low=0)

    def __call__(self, op: UnknownOperator, x_hat: Tensor, y: Tensor, sigma_y: float) -> None:
        params = unknowns(op)
        form = op.penalty() if self.penalty else None
        optimiser = torch.optim.Adam(params, lr=self.lr)
        x_hat, y = x_hat.detach(), y.detach()
        with torch.enable_grad():
            for _ in range(self.steps):
                optimiser.zero_grad()
                residual = (y.to(x_hat.dtype) - op(x_hat)).flatten(1)
                loss = residual.square().sum(1).mean() / (2 * sigma_y**2)
                theta = torch.cat([p.to(torch.float64).flatten() for p in params])
                loss = loss + self.reg / 2 * theta.square().sum()
                if form is not None:
                    loss = loss + self.penalty / 2 * theta @ form.to(theta.device) @ theta
                loss.backward()
                optimiser.step()
                op.project()
        for p in params:
            p.grad = None


class FitMStep(MStep):
    r"""The operator's own estimator, ``op.fit(x_hat, y, **options)``, for operators that
    have one: :meth:`operators.ConvolutiveTransfer.fit` (forward convolutive prediction, a
    weighted ridge regression per frequency in closed form; ``joint=True`` fits all sources
    at once, the M-step of the model). The fit's own weighting and ridge define the
    objective, so :math:`\sigma_y` is not used (a uniform noise level only scales it).

    Arguments:
        options: Keywords of the operator's ``fit`` (checked by it at the first M-step).
    """

    def __init__(self, **options: Any) -> None:
        self.options = options

    def check(self, op: UnknownOperator) -> None:
        super().check(op)
        if not callable(getattr(op, "fit", None)):
            raise TypeError(
                f"FitMStep uses the operator's own estimator, and {type(op).__name__} has no "
                "fit method: use LeastSquaresMStep (linear in its unknowns) or GradientMStep"
            )

    @torch.no_grad()
    def __call__(self, op: UnknownOperator, x_hat: Tensor, y: Tensor, sigma_y: float) -> None:
        self.check(op)
        rows = x_hat.shape[0]
        op.fit(x_hat.detach(), y.detach().to(x_hat.dtype).expand(rows, *y.shape[1:]),
               **self.options)  # fmt: skip
