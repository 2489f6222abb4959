r"""Surrogate-likelihood guidance through a learned contrastive critic (CoGuide).

With a critic :math:`s_\theta(x, y) = \langle f(x), g(y) \rangle / \tau` trained by InfoNCE
on pairs :math:`(x, A(x))` simulated from prior samples
(:class:`priors.ContrastiveLikelihood`), :math:`s_\theta` estimates :math:`\log p(y \mid x)`
up to a function of :math:`y`. The term replaces DPS's surrogate
:math:`\log p(y \mid \hat x)` by it:

.. math:: g = s \, J^\top \nabla_{\hat x}\, s_\theta(\hat x(x_t), y),
    \qquad J = \partial \hat x / \partial x_t ,

so the operator is never called while sampling and never differentiated (it may be a
planner, a legacy binary, a quantizer); the critic is. The scale :math:`s` sharpens the
learned likelihood (:math:`s = 1` is the estimate itself, a likelihood of the trained
operator's own noise: none for a deterministic simulator, hence larger scales). Cost per
call and row: one VJP of the network and one forward and backward pass of the signal
encoder; :math:`g(y)` is computed once.

The critic is trained on clean signals and evaluated on denoised estimates
:math:`\hat x(x_t)`, which are blurred early in sampling; its gradient there is an
extrapolation, the same approximation DPS makes with the true operator.

References:
    | Contrastive Diffusion Guidance (CoGuide, ICLR 2026)
    | Representation Learning with Contrastive Predictive Coding (Oord et al., 2018)
    | https://arxiv.org/abs/1807.03748
"""

from __future__ import annotations

import torch

from torch import Tensor

import checks

from guided.guidance import Guidance
from priors import ContrastiveLikelihood, Schedule

__all__ = ["SurrogateLikelihood"]


class SurrogateLikelihood(Guidance):
    r"""The term :math:`g = s\, J^\top \nabla_{\hat x} s_\theta(\hat x, y)` (see the module).

    Arguments:
        critic: A trained :class:`priors.ContrastiveLikelihood` (only differentiated with
            respect to its input; its parameters are left as they are).
        y: The measurement, :math:`(B, *y\_shape)` or one for all rows.
        scale: The scale :math:`s \geq 0`.
    """

    def __init__(self, critic: ContrastiveLikelihood, y: Tensor, scale: float = 1.0) -> None:
        super().__init__()
        if not isinstance(critic, ContrastiveLikelihood):
            raise TypeError(
                f"critic must be a priors.ContrastiveLikelihood, got {type(critic).__name__}"
            )
        if not isinstance(y, Tensor):
            raise TypeError(f"y must be a tensor, got {type(y).__name__}")
        if tuple(y.shape) == critic.y_shape:
            y = y[None]
        if tuple(y.shape[1:]) != critic.y_shape or y.shape[0] < 1:
            raise ValueError(
                f"y must have shape (B, *{critic.y_shape}) for this critic, got {tuple(y.shape)}"
            )
        if not bool(torch.isfinite(y).all()):
            raise ValueError("y contains NaN or Inf")
        self.scale = checks.number(scale, "scale", low=0)
        self.critic = critic
        with torch.no_grad():
            target = critic.embed_y(y.detach())
        self.register_buffer("target", target, persistent=False)

    def vector(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        if tuple(x_hat.shape[1:]) != self.critic.x_shape:
            raise ValueError(
                f"the critic was trained on signals {self.critic.x_shape}, the prior gives "
                f"{tuple(x_hat.shape[1:])}"
            )
        if self.target.shape[0] not in (1, x_hat.shape[0]):
            raise ValueError(
                f"y has {self.target.shape[0]} rows, x_t has {x_hat.shape[0]}: give one "
                "measurement per row or one for all"
            )
        with torch.enable_grad():
            x = x_hat.detach().requires_grad_(True)
            target = self.target.to(x.device)
            score = (self.critic.embed_x(x) * target).sum(-1) / self.critic.temperature
            (grad,) = torch.autograd.grad(score.sum(), x)
        return self.scale * grad.to(x_hat.dtype)
