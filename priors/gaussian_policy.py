r"""A Gaussian policy: the behaviour-cloning baseline of diffusion policies.

An MLP maps a state to the mean and log standard deviation of a diagonal Gaussian over
actions, :math:`\pi(a \mid s) = \mathcal{N}(\mu(s), \operatorname{diag} \sigma(s)^2)`, trained
by maximum likelihood (:meth:`GaussianPolicy.nll`); it acts with its mean. Multimodal
behaviour data (the four-mode bandit) is where it fails and a diffusion prior does not.
"""

from __future__ import annotations

from torch import Tensor, nn

import checks

__all__ = ["GaussianPolicy"]


class GaussianPolicy(nn.Module):
    r""":math:`s \mapsto (\mu(s), \log \sigma(s))`, shapes :math:`(B, A)` each, with
    :math:`\log \sigma` clamped to :math:`[-5, 2]`.

    Arguments:
        state_dim: The state's size.
        action_dim: The action's size.
        width: The width of the two hidden layers (Mish activations).
    """

    def __init__(self, state_dim: int, action_dim: int, width: int = 256) -> None:
        super().__init__()
        for name, value in (
            ("state_dim", state_dim),
            ("action_dim", action_dim),
            ("width", width),
        ):
            checks.integer(value, name, low=1)
        self.action_dim = action_dim
        #: The constructor's arguments (what :func:`priors.weights.save` records).
        self.arguments = {"state_dim": state_dim, "action_dim": action_dim, "width": width}
        self.net = nn.Sequential(
            nn.Linear(state_dim, width), nn.Mish(), nn.Linear(width, width), nn.Mish(),
            nn.Linear(width, 2 * action_dim),
        )  # fmt: skip

    def forward(self, state: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.net(state).split(self.action_dim, 1)
        return mean, log_std.clamp(-5, 2)

    def nll(self, state: Tensor, action: Tensor) -> Tensor:
        """The negative log-likelihood of ``action`` per row (up to a constant), averaged."""
        mean, log_std = self(state)
        return (0.5 * ((action - mean) / log_std.exp()).square() + log_std).sum(1).mean()

    def act(self, state: Tensor) -> Tensor:
        """The mean action, clipped to the bounds :math:`[-1, 1]`."""
        return self(state)[0].clamp(-1, 1)
