r"""Linear algebra helpers shared by operators.

:func:`cg` solves :math:`M x = b` for a symmetric positive semi-definite :math:`M` given as
a function, independently for each row of a batch, with a fixed number of iterations (no
data-dependent branching, as in azula). Started from 0 on the normal equations
:math:`A^\top A x = A^\top y`, its iterates stay in the row space of :math:`A`, so they
converge to the minimum-norm least-squares solution :math:`A^+ y`.

References:
    | Methods of Conjugate Gradients for Solving Linear Systems (Hestenes & Stiefel, 1952)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from torch import Tensor

__all__ = ["batch_dot", "cg", "project_simplex"]


def batch_dot(a: Tensor, b: Tensor) -> Tensor:
    r"""Per-row inner products :math:`\langle a_i, b_i \rangle` (real part), shape :math:`(B,)`."""
    return (a.conj() * b).real.flatten(1).sum(1) if a.is_complex() else (a * b).flatten(1).sum(1)


def cg(matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int = 64) -> Tensor:
    r"""Conjugate gradients for :math:`M x = b`, per row, from :math:`x_0 = 0`.

    Arguments:
        matvec: :math:`v \mapsto M v` for a symmetric positive semi-definite :math:`M`.
        b: The right-hand side, with shape :math:`(B, *)`.
        iterations: The fixed number of iterations.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = batch_dot(r, r)
    tiny = torch.finfo(rr.dtype).tiny
    # A row stops moving once its residual is at rounding level (iterating further divides
    # rounding noise by rounding noise); the loop itself never branches.
    floor = (10 * torch.finfo(rr.dtype).eps) ** 2 * rr
    for _ in range(iterations):
        mp = matvec(p)
        pmp = batch_dot(p, mp)
        active = (rr > floor) & (pmp > tiny)
        alpha = torch.where(active, rr / pmp.clamp(min=tiny), torch.zeros_like(rr))
        x = x + _rows(alpha, x) * p
        r = r - _rows(alpha, x) * mp
        rr_new = batch_dot(r, r)
        beta = torch.where(active, rr_new / rr.clamp(min=tiny), torch.zeros_like(rr))
        p = r + _rows(beta, x) * p
        rr = rr_new
    return x


def _rows(c: Tensor, like: Tensor) -> Tensor:
    return c.reshape(c.shape + (1,) * (like.ndim - 1))


def project_simplex(v: Tensor) -> Tensor:
    r"""The Euclidean projection of each row (last axis) of ``v`` onto the probability simplex
    :math:`\{p : p_i \geq 0, \sum_i p_i = 1\}`, by the sort-based algorithm of
    Duchi et al. (2008): :math:`p = (v - \tau)_+` with the threshold :math:`\tau` that makes
    the sum 1.

    References:
        | Efficient Projections onto the l1-Ball for Learning in High Dimensions
        | (Duchi et al., 2008) https://doi.org/10.1145/1390156.1390191
    """
    u = torch.sort(v, dim=-1, descending=True).values
    cumulative = u.cumsum(-1) - 1
    k = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    support = (u - cumulative / k > 0).sum(-1, keepdim=True)
    tau = cumulative.gather(-1, support - 1) / support.to(v.dtype)
    return (v - tau).clamp_min(0)
