r"""Value guidance: sample :math:`\pi(a \mid s) \propto \mu(a \mid s) \exp(\beta\, Q(s, a))`
from a conditional prior :math:`\mu` and a critic :math:`Q` (:class:`priors.Critic`).

The exact guidance term is the score of the intermediate energy :math:`E_t(a_t, s) = \log
E_{\mu(a \mid a_t, s)}[\exp(\beta Q(s, a))]` (Lu et al., 2023). Two standard estimates:

- :class:`ValueGuidance` (through the denoised estimate, DPS-style): :math:`E_t \approx
  \beta Q(s, \hat a(a_t))`, so :math:`g = \beta J^\top \nabla_{\hat a} Q(s, \hat a)`, one
  VJP through the prior per call; the critic only ever sees clean actions.
- :class:`NoisyValueGuidance` (Diffuser-style, Janner et al., 2022): a noise-aware critic
  :math:`Q_\phi(s, a_t, t) \approx E[Q(s, a) \mid a_t]` gives
  :math:`g = \beta \nabla_{a_t} Q_\phi(s, a_t, t)` directly, with no VJP of the prior
  (by Jensen's inequality :math:`\beta E[Q \mid a_t] \leq E_t`, so this is the gradient of
  a lower bound of :math:`E_t`, not a bound on its gradient). A critic
  trained by QGPO's contrastive energy prediction (:func:`experiments.rl.training.train_energy`)
  estimates :math:`E_t` itself up to a function of :math:`(s, t)`, and this term with it at
  scale 1 is the exact guidance.

Both hold the condition (the states, one per row, like a measurement) and are ordinary
:class:`~guided.guidance.Guidance` terms: they add to classifier-free guidance on a return,
to safety terms and to any sampler. Large :math:`\beta` pushes actions off the data's
support (over-guidance); best-of-N selection by :math:`Q` is the strong non-gradient
alternative.

References:
    | Contrastive Energy Prediction for Exact Energy-Guided Diffusion Sampling in Offline
    | Reinforcement Learning (Lu et al., 2023) https://arxiv.org/abs/2304.12824
    | Planning with Diffusion for Flexible Behavior Synthesis (Janner et al., 2022)
    | https://arxiv.org/abs/2205.09991
"""

from __future__ import annotations

from typing import ClassVar

import torch

from torch import Tensor

import checks

from guided.classifier import check_schedule
from guided.guidance import Guidance
from priors import Critic, Schedule

__all__ = ["NoisyValueGuidance", "ValueGuidance"]


def _check(critic: Critic, state: Tensor, scale: float, noisy: bool) -> tuple[Tensor, float]:
    if not isinstance(critic, Critic):
        raise TypeError(f"critic must be a priors.Critic, got {type(critic).__name__}")
    if critic.action_dim == 0:
        raise ValueError("the critic is a state value V(s): guidance needs Q(s, a)")
    if critic.noisy != noisy:
        raise ValueError(
            "NoisyValueGuidance needs a noise-aware critic (with a schedule)"
            if noisy
            else "ValueGuidance needs a clean critic Q(s, a); use NoisyValueGuidance for a "
            "noise-aware one"
        )
    if not isinstance(state, Tensor):
        raise TypeError(f"state must be a tensor, got {type(state).__name__}")
    state = state[None] if state.ndim == 1 else state
    critic.check(state)
    if not bool(torch.isfinite(state).all()):
        raise ValueError("state contains NaN or Inf")
    scale = checks.number(scale, "scale", low=0)
    return state.detach(), scale


def _rows(state: Tensor, action: Tensor, critic: Critic) -> Tensor:
    if action.ndim != 2 or action.shape[1] != critic.action_dim:
        raise ValueError(
            f"the critic was trained for {critic.action_dim}-dimensional actions; the prior "
            f"gives {tuple(action.shape[1:])}"
        )
    if state.shape[0] not in (1, action.shape[0]):
        raise ValueError(f"{state.shape[0]} states for {action.shape[0]} action rows")
    return state.to(action.device).expand(action.shape[0], -1)


class ValueGuidance(Guidance):
    r""":math:`g = \beta J^\top \nabla_{\hat a} Q(s, \hat a)` (see the module).

    Arguments:
        critic: A clean critic :math:`Q(s, a)`.
        state: The states :math:`(B, S)`, or one :math:`(S,)` for all rows.
        scale: :math:`\beta \geq 0`.
    """

    def __init__(self, critic: Critic, state: Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.state, self.scale = _check(critic, state, scale, noisy=False)
        self.critic = critic

    def vector(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        state = _rows(self.state, x_hat, self.critic)
        _, grad = self.critic.value_and_grad(state, x_hat.detach(), scale=self.scale)
        return grad.to(x_hat.dtype)


class NoisyValueGuidance(Guidance):
    r""":math:`g = \beta \nabla_{a_t} Q_\phi(s, a_t, t)` (see the module); no VJP of the
    prior.

    Arguments:
        critic: A noise-aware critic trained on the prior's schedule.
        state: The states :math:`(B, S)`, or one :math:`(S,)` for all rows.
        scale: :math:`\beta \geq 0`.
    """

    uses_vjp: ClassVar[bool] = False

    def __init__(self, critic: Critic, state: Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.state, self.scale = _check(critic, state, scale, noisy=True)
        self.critic = critic

    def forward(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        state = _rows(self.state, x_t, self.critic)
        check_schedule(self.critic, t, schedule, "critic")
        _, grad = self.critic.value_and_grad(state, x_t.detach(), t, scale=self.scale)
        return grad.to(x_t.dtype)
