r"""Critics: learned scalar functions of a condition and a signal, :math:`Q_\phi(s, a)`.

In offline reinforcement learning a critic scores an action :math:`a` in a state :math:`s`
(its expected return); guidance then samples :math:`\pi(a \mid s) \propto \mu(a \mid s)
\exp(\beta Q(s, a))` from a behaviour prior :math:`\mu` (Lu et al., 2023). Two kinds:

- a *clean* critic :math:`Q_\phi(s, a)`, trained on data actions (IQL's expectile regression,
  Kostrikov et al., 2022, in :mod:`experiments.rl.training`); guidance differentiates it at the
  denoised action :math:`\hat a(a_t)`;
- a *noise-aware* critic :math:`Q_\phi(s, a_t, t)` (with a schedule), trained on noisy
  actions :math:`a_t = \alpha_t a + \sigma_t \epsilon` to regress the clean action's value
  (Janner et al., 2022); guidance differentiates it at :math:`a_t` directly, like a
  noise-conditional classifier.

With ``action_dim=0`` the network is a state value :math:`V_\psi(s)`. With
``output="log_prob"`` it is a binary classifier of an event (an action being safe, say)
that returns :math:`\log p(\text{event} \mid s, a) = \log \sigma(h)` of its logit
:math:`h` (:meth:`Critic.logit`, what a cross-entropy loss trains); value guidance with it
is safety guidance, :math:`\beta \nabla \log p(\text{safe} \mid s, a_t)`.

References:
    | Offline Reinforcement Learning with Implicit Q-Learning (Kostrikov et al., 2022)
    | https://arxiv.org/abs/2110.06169
    | Contrastive Energy Prediction for Exact Energy-Guided Diffusion Sampling in Offline
    | Reinforcement Learning (Lu et al., 2023) https://arxiv.org/abs/2304.12824
    | Planning with Diffusion for Flexible Behavior Synthesis (Janner et al., 2022)
    | https://arxiv.org/abs/2205.09991
"""

from __future__ import annotations

import torch

from torch import Tensor, nn

import checks

from priors.embedding import timestep_embedding
from priors.layers import run_layers
from priors.schedules import Schedule, as_time

__all__ = ["Critic"]


class Critic(nn.Module):
    r""":math:`Q_\phi(s, a)` (or :math:`Q_\phi(s, a_t, t)` with a schedule, or
    :math:`V_\psi(s)` with ``action_dim=0``): an MLP over the concatenation, shape
    :math:`(B,)`.

    Arguments:
        state_dim: The state's size.
        action_dim: The action's size (0 for a state value).
        width: The hidden width.
        depth: The number of hidden layers.
        schedule: The noise schedule of a noise-aware critic (``None``: a clean one).
        embedding: The size of the time embedding of a noise-aware critic.
        output: ``"value"`` (the network's output) or ``"log_prob"`` (its log-sigmoid).
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        width: int = 256,
        depth: int = 2,
        schedule: Schedule | None = None,
        embedding: int = 32,
        output: str = "value",
    ) -> None:
        super().__init__()
        for name, value, least in (
            ("state_dim", state_dim, 1), ("action_dim", action_dim, 0),
            ("width", width, 1), ("depth", depth, 1),
        ):  # fmt: skip
            checks.integer(value, name, low=least)
        if output not in ("value", "log_prob"):
            raise ValueError(f"output must be 'value' or 'log_prob', got {output!r}")
        if schedule is not None and action_dim == 0:
            raise ValueError("a state value V(s) has no action to be noisy")
        self.state_dim, self.action_dim = state_dim, action_dim
        self.schedule, self.embedding, self.output = schedule, embedding, output
        #: The constructor's arguments but the schedule (what :func:`priors.weights.save` records).
        self.arguments = {
            "state_dim": state_dim, "action_dim": action_dim, "width": width, "depth": depth,
            "embedding": embedding, "output": output,
        }  # fmt: skip
        inputs = state_dim + action_dim + (embedding if schedule is not None else 0)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                nn.Linear(inputs if i == 0 else width, width),
                nn.LayerNorm(width),
                nn.SiLU(),
            ]
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    @property
    def noisy(self) -> bool:
        """Whether the critic is noise-aware (takes :math:`a_t` and :math:`t`)."""
        return self.schedule is not None

    def check(self, state: Tensor, action: Tensor | None = None) -> None:
        """Raises a clear error for inputs of the wrong size (the action when given)."""
        if state.ndim != 2 or state.shape[1] != self.state_dim:
            raise ValueError(
                f"state must have shape (B, {self.state_dim}) for this critic, got "
                f"{tuple(state.shape)}"
            )
        if action is not None and (
            not self.action_dim or action.ndim != 2 or action.shape[1] != self.action_dim
        ):
            shape = tuple(action.shape)
            raise ValueError(
                f"action must have shape (B, {self.action_dim}) for this critic (it was "
                f"trained for {self.action_dim}-dimensional actions), got {shape}"
            )
        if action is not None and action.shape[0] != state.shape[0]:
            raise ValueError(f"{state.shape[0]} states for {action.shape[0]} actions")

    def forward(
        self, state: Tensor, action: Tensor | None = None, t: Tensor | float | None = None
    ) -> Tensor:
        r"""The value, or :math:`\log \sigma(h)` for ``output="log_prob"``, :math:`(B,)`."""
        h = self.logit(state, action, t)
        return nn.functional.logsigmoid(h) if self.output == "log_prob" else h

    def logit(
        self, state: Tensor, action: Tensor | None = None, t: Tensor | float | None = None
    ) -> Tensor:
        """The network's output :math:`h`, :math:`(B,)`."""
        return run_layers(self.net, self._inputs(state, action, t))[:, 0]

    def value_and_grad(
        self, state: Tensor, action: Tensor, t: Tensor | float | None = None, scale: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        r"""What :meth:`forward` returns, :math:`(B,)`, and ``scale`` times its gradient with
        respect to the action, :math:`(B, A)`, what value guidance needs at every step.

        The backward pass through the MLP is written out with the kernels autograd would run
        (the same results), without building a graph, which on a few hundred rows costs
        more than the kernels; nothing flows to the parameters, the state or the time, as
        with ``torch.autograd.grad`` without ``create_graph``. A network whose layers were
        changed from the ones built here, or a subclass that computes its own value, is
        differentiated by autograd instead.

        Kept because it saves at least 10%: with autograd instead, noise-aware value
        guidance of 256 actions (10 DDPM steps, one thread) took 1.23x as long with the
        bandit's networks (1.06x with Pendulum's; medians of 41 alternated pairs,
        ``python -m experiments.benchmarks.latency_tricks --repeats 41``).
        """
        if not self.action_dim:
            raise ValueError("a state value V(s) has no action to differentiate")
        layers = list(self.net)
        pattern = (nn.Linear, nn.LayerNorm, nn.SiLU) * ((len(layers) - 1) // 3) + (nn.Linear,)
        ours = type(self).forward is Critic.forward and type(self).logit is Critic.logit
        if not ours or tuple(type(layer) for layer in layers) != pattern:
            with torch.enable_grad():
                a = action.detach().requires_grad_(True)
                value = self(state, a, t)
                (grad,) = torch.autograd.grad(value, a, torch.full_like(value, scale))
            return value.detach(), grad
        with torch.no_grad():
            h = self._inputs(state, action, t)
            saved = []
            for linear, norm in zip(layers[0:-1:3], layers[1:-1:3], strict=True):
                z = nn.functional.linear(h, linear.weight, linear.bias)
                y, mean, rstd = torch.ops.aten.native_layer_norm(
                    z, norm.normalized_shape, norm.weight, norm.bias, norm.eps
                )
                h = nn.functional.silu(y)
                saved.append((linear, norm, z, y, mean, rstd))
            last = layers[-1]
            value = nn.functional.linear(h, last.weight, last.bias)  # (B, 1)
            if self.output == "log_prob":  # d log sigmoid(h) / dh = sigmoid(-h)
                g = (scale * torch.sigmoid(-value)) * last.weight
                value = nn.functional.logsigmoid(value)
            else:
                g = (scale * last.weight).expand(h.shape[0], -1)
            for linear, norm, z, y, mean, rstd in reversed(saved):
                g = torch.ops.aten.silu_backward(g, y)
                g = torch.ops.aten.native_layer_norm_backward(
                    g, z, norm.normalized_shape, mean, rstd, norm.weight, norm.bias,
                    [True, False, False],
                )[0]  # fmt: skip
                if linear is not layers[0]:
                    g = g @ linear.weight
            columns = slice(self.state_dim, self.state_dim + self.action_dim)
            return value[:, 0], g @ layers[0].weight[:, columns]

    def _inputs(self, state: Tensor, action: Tensor | None, t: Tensor | float | None) -> Tensor:
        """The checked inputs, concatenated: state, action, time embedding."""
        if self.action_dim and action is None:
            raise ValueError(f"this critic scores actions: give action (B, {self.action_dim})")
        self.check(state, action)
        if self.noisy and t is None:
            raise ValueError("a noise-aware critic needs the time t")
        if not self.noisy and t is not None:
            raise ValueError("a clean critic takes no time t")
        dtype = next(iter(self.net)).weight.dtype
        parts = [state.to(dtype)] + ([action.to(dtype)] if self.action_dim else [])
        if self.noisy:
            t = as_time(t).to(state.device)  # one time for all rows is embedded once
            emb = timestep_embedding(t.reshape(-1), self.embedding).to(dtype)
            parts.append(emb.expand(state.shape[0], -1))
        return torch.cat(parts, 1)
