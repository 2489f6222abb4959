r"""Measurement guidance as a denoiser wrapper.

A guidance term approximates the likelihood score :math:`g_k \approx \nabla_{x_t} \log
p(y_k \mid x_t)`. By Tweedie's formula the posterior mean given the measurements is

.. math:: E[x \mid x_t, y_{1..K}] = \hat x(x_t) + \frac{\sigma_t^2}{\alpha_t} \sum_k g_k,

(at :math:`\alpha_t = 0`, pure noise, the prior's :math:`\hat x` unchanged:
:func:`priors.tweedie.likelihood_gain`)

so a :class:`GuidedDenoiser` is again a :class:`~priors.Denoiser`, and every sampler becomes
a posterior sampler (the k-diffusion pattern). Several measurements with their own terms
and weights give :math:`p(x \mid y_1..y_K) \propto p(x) \prod_k p(y_k \mid x)`.

Most rules (DPS, PiGDM) differentiate a surrogate log-likelihood of the denoised estimate
:math:`\hat x(x_t)`: :math:`g = J^\top v` with :math:`J = \partial \hat x / \partial x_t`
and :math:`v = \nabla_{\hat x} \log \tilde p(y \mid \hat x)`. Such terms implement
:meth:`Guidance.vector`; the guided denoiser adds their vectors and pays **one**
vector-Jacobian product through the network per call, however many terms there are.
Reductions are per sample: row :math:`i` never depends on row :math:`j`.
"""

from __future__ import annotations

import abc
import functools
import operator

from typing import Any, ClassVar

import torch

from torch import Tensor, nn

import checks

from operators import (
    LinearOperator,
    NotDifferentiableError,
    Operator,
    UnsupportedOperator,
    check_shape,
)
from priors import Denoiser, RectifiedSchedule, Schedule, Wrapper, all_finite, record
from priors.tweedie import append_dims, coefficients, likelihood_gain

__all__ = [
    "Guidance",
    "GuidedDenoiser",
    "check_differentiable",
    "check_flow",
    "check_measurement",
    "check_rows",
    "check_structure",
]


def check_measurement(op: Operator, y: Tensor, sigma_y: float | None) -> Tensor:
    """Validates a measurement for ``op``: a real floating tensor of shape :math:`(B,
    *out\\_shape)` or :math:`(*out\\_shape)` (one for all rows), finite; ``sigma_y`` a finite
    number >= 0 (an infinite noise level would silently ignore the measurement)."""
    if not isinstance(op, Operator):
        raise TypeError(f"op must be an operators.Operator, got {type(op).__name__}")
    checks.real_tensor(y, "y")
    if tuple(y.shape) == op.out_shape:
        y = y[None]
    check_shape(y, op.out_shape, "y")
    if sigma_y is not None:
        checks.number(sigma_y, "sigma_y", low=0)
    return y.detach()


def check_differentiable(op: Operator, method: str) -> None:
    """Refuses an operator without vector-Jacobian products for a method that needs them
    (:class:`operators.NotDifferentiableError`, naming the derivative-free rules)."""
    if not op.differentiable:
        raise NotDifferentiableError(
            f"{method} needs vector-Jacobian products of the operator; {type(op).__name__} is "
            "not differentiable: use a derivative-free rule (guided.EnKG, guided.ZerothOrder, "
            "guided.SurrogateLikelihood)"
        )


def check_structure(
    op: Operator, kind: type[LinearOperator], method: str, needs: str, instead: str
) -> None:
    """Refuses an operator without the structure a method needs, a
    :class:`~operators.LinearOperator` or an :class:`~operators.SVDOperator`
    (:class:`operators.UnsupportedOperator`, naming what the method uses it for and what to
    use instead)."""
    if not isinstance(op, kind):
        article = "an" if kind.__name__.startswith(("SVD", "A", "E", "I", "O", "U")) else "a"
        raise UnsupportedOperator(
            f"{method} needs {article} {kind.__name__} ({needs}); got {type(op).__name__}: "
            f"{instead}"
        )


def check_flow(schedule: Schedule, method: str, does: str, instead: str) -> None:
    """Refuses a prior that is not a flow-matching prior (:class:`~priors.RectifiedSchedule`)
    for a flow-native method (``ValueError``: the prior's kind is wrong, not its type), saying
    what the method ``does`` with the flow and which method to use ``instead``."""
    flow = isinstance(schedule, RectifiedSchedule)
    if not flow:
        raise ValueError(
            f"{method} {does}: it needs a prior on priors.RectifiedSchedule, got "
            f"{type(schedule).__name__} (for diffusion priors use {instead})"
        )


def check_rows(holder: Any, batch: int) -> None:
    """Raises when the measurement ``y`` that ``holder`` (a guidance term or a sampler, or the
    term a sampler holds) carries has neither one row nor ``batch`` rows."""
    for obj in (holder, getattr(holder, "term", None)):
        y = getattr(obj, "y", None)
        if isinstance(y, torch.Tensor) and y.ndim and y.shape[0] not in (1, batch):
            raise ValueError(
                f"{type(obj).__name__}'s measurement has {y.shape[0]} rows for {batch} samples: "
                "give one measurement for all rows or one per row"
            )


class Guidance(nn.Module, abc.ABC):
    r"""A likelihood term :math:`g \approx \nabla_{x_t} \log p(y \mid x_t)`.

    Subclasses implement :meth:`vector` (the common case: a vector-Jacobian product through
    the denoiser) or override :meth:`forward`.
    """

    #: Whether the term needs the network's vector-Jacobian product (most do); when no term
    #: of a :class:`GuidedDenoiser` does, the prior runs without an autograd graph.
    uses_vjp: ClassVar[bool] = True

    def vector(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        r""":math:`v = \nabla_{\hat x} \log \tilde p(y \mid \hat x)`, detached, shape of
        :math:`\hat x`; the term is then :math:`g = J^\top v`."""
        raise NotImplementedError(f"{type(self).__name__} defines no vector")

    def forward(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        r""":math:`g` with the shape of ``x_t``; ``x_hat`` must carry the graph from
        ``x_t`` (as :class:`GuidedDenoiser` provides)."""
        v = self.vector(x_t, t, x_hat, schedule)
        (g,) = torch.autograd.grad(x_hat, x_t, v)
        record(vjp_rows=x_t.shape[0])
        return g


class GuidedDenoiser(Wrapper):
    r"""The prior's denoiser corrected by guidance terms (see the module).

    Arguments:
        prior: The unconditional (or conditioned by keywords) denoiser.
        terms: Guidance terms, each with its own measurement and weight.
    """

    def __init__(self, prior: Denoiser, *terms: Guidance) -> None:
        if not isinstance(prior, Denoiser):
            raise TypeError(f"prior must be a priors.Denoiser, got {type(prior).__name__}")
        if not terms:
            raise ValueError("a guided denoiser needs at least one guidance term")
        for term in terms:
            if not isinstance(term, Guidance):
                raise TypeError(f"terms must be guided.Guidance, got {type(term).__name__}")
            classes, ours = getattr(term, "num_classes", None), getattr(prior, "num_classes", 0)
            if classes and ours and classes != ours:
                raise ValueError(
                    f"{type(term).__name__} has {classes} classes, the prior has {ours}: the "
                    "classifier was trained for other data"
                )
        super().__init__(prior)
        self.terms = nn.ModuleList(terms)

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        alpha_t, sigma_t = self.schedule(t)

        def when() -> str:  # formatted only on failure
            return f"t = {t.flatten()[0].item():.4g}"

        for term in self.terms:
            check_rows(term, x_t.shape[0])
        noise = alpha_t == 0  # pure noise: no correction there (priors.tweedie.likelihood_gain)
        if bool(noise.all()):
            return self.prior(x_t, t, **cond)
        graph = any(term.uses_vjp for term in self.terms)  # else the prior runs without one
        with torch.enable_grad() if graph else torch.no_grad():
            x = x_t.detach().requires_grad_(graph)
            x_hat = self.prior(x, t, **cond)
        with torch.enable_grad():
            if not all_finite(x_hat):
                raise FloatingPointError(
                    f"the prior's denoiser ({type(self.prior).__name__}) returned NaN or Inf at "
                    f"{when()} for an input of largest magnitude {float(x_t.abs().max()):.3g} "
                    "(a huge input means an earlier guided step diverged)"
                )
            vectors, others = [], []
            for term in self.terms:  # VJP terms pool their vectors; others give g directly
                if type(term).forward is Guidance.forward:
                    vectors.append(term.vector(x, t, x_hat, self.schedule))
                else:
                    others.append(term(x, t, x_hat, self.schedule))
            parts = []  # g's summands: the pooled VJP first, then the direct terms
            if vectors:
                (vjp,) = torch.autograd.grad(x_hat, x, torch.stack(vectors).sum(0))
                record(vjp_rows=x_t.shape[0])
                parts.append(vjp)
            parts += others
            g = functools.reduce(operator.add, parts) if parts else torch.zeros_like(x_t)
        if bool(noise.any()):  # rows at pure noise take no correction, whatever g holds there
            g = torch.where(append_dims(noise.to(g.device), g.ndim), 0, g)
        if not all_finite(g):
            names = ", ".join(type(term).__name__ for term in self.terms)
            raise FloatingPointError(f"the guidance ({names}) is NaN or Inf at {when()}")
        gain = likelihood_gain(*coefficients(x_t, alpha_t, sigma_t))
        if isinstance(gain, float):  # one time: one fused operation
            return torch.add(x_hat.detach(), g, alpha=gain)
        return x_hat.detach() + gain * g
