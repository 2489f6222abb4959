r"""Environments for the offline RL suite: a batched numpy Pendulum-v1 (bit-exact with
gymnasium's, so data sets of a million transitions take a second), its scripted swing-up
controller, and evaluation of a policy in gymnasium itself.

Pendulum-v1 (gymnasium 1.x): state :math:`(\theta, \dot\theta)`, observation
:math:`(\cos\theta, \sin\theta, \dot\theta)`, torque :math:`u \in [-2, 2]`, reward
:math:`-(\operatorname{wrap}(\theta)^2 + 0.1 \dot\theta^2 + 0.001 u^2)`,
:math:`\dot\theta \leftarrow \operatorname{clip}(\dot\theta + (15 \sin\theta + 3u)\,0.05,
\pm 8)`, :math:`\theta \leftarrow \theta + 0.05\,\dot\theta`, 200 steps from
:math:`\theta \sim U(-\pi, \pi)`, :math:`\dot\theta \sim U(-1, 1)`. Actions here are
normalised to :math:`[-1, 1]` (torque / 2).

The swing-up controller pumps energy, :math:`u = k (E^\star - E)\operatorname{sign}
\dot\theta` with :math:`E = \frac12 \dot\theta^2 + 15 \cos\theta`, :math:`E^\star = 15`,
and balances with :math:`u = -(10\theta + 2\dot\theta)` near the top.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["PENDULUM_STEPS", "Pendulum", "Policy", "evaluate", "swing_up"]

#: The episode length of Pendulum-v1.
PENDULUM_STEPS = 200
MAX_TORQUE, MAX_SPEED, DT, G = 2.0, 8.0, 0.05, 10.0

Policy = Callable[[np.ndarray], np.ndarray]


def _wrap(theta: np.ndarray) -> np.ndarray:
    return ((theta + np.pi) % (2 * np.pi)) - np.pi


class Pendulum:
    """``n`` Pendulum-v1 episodes stepped together (numpy, float64 state)."""

    state_dim, action_dim = 3, 1

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.theta = rng.uniform(-np.pi, np.pi, n)
        self.speed = rng.uniform(-1.0, 1.0, n)

    def observe(self) -> np.ndarray:
        """Observations :math:`(n, 3)`, float32 as gymnasium's."""
        obs = np.stack([np.cos(self.theta), np.sin(self.theta), self.speed], 1)
        return obs.astype(np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Applies normalised actions :math:`(n, 1)` in [-1, 1]; returns the rewards and
        the next observations."""
        u = np.clip(MAX_TORQUE * action[:, 0].astype(np.float64), -MAX_TORQUE, MAX_TORQUE)
        cost = _wrap(self.theta) ** 2 + 0.1 * self.speed**2 + 0.001 * u**2
        speed = self.speed + (3 * G / 2 * np.sin(self.theta) + 3.0 * u) * DT
        self.speed = np.clip(speed, -MAX_SPEED, MAX_SPEED)
        self.theta = self.theta + self.speed * DT
        return -cost, self.observe()


def swing_up(obs: np.ndarray, gain: float = 1.0, top: float = 0.9) -> np.ndarray:
    """The scripted controller (see the module): normalised actions :math:`(n, 1)` from
    observations :math:`(n, 3)`; balancing where :math:`\\cos\\theta >` ``top``."""
    cos, sin, speed = (obs[:, i].astype(np.float64) for i in range(3))
    theta = np.arctan2(sin, cos)
    energy = 0.5 * speed**2 + 15 * cos
    pump = gain * (15 - energy) * np.sign(speed + 1e-9)
    balance = -(10 * theta + 2 * speed)
    u = np.where(cos > top, balance, pump)
    return (np.clip(u, -MAX_TORQUE, MAX_TORQUE) / MAX_TORQUE)[:, None].astype(np.float32)


def evaluate(policy: Policy, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` gymnasium Pendulum-v1 episodes (seeds ``seed``,
    ``seed + 1``, ...) under ``policy`` (observations :math:`(n, 3)` to normalised actions
    :math:`(n, 1)`), all episodes stepped as one vector environment."""
    import gymnasium as gym

    envs = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1") for _ in range(episodes)])
    obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
    returns = np.zeros(episodes)
    for _ in range(PENDULUM_STEPS):
        action = np.asarray(policy(obs), dtype=np.float32)
        if action.shape != (episodes, 1) or not np.isfinite(action).all():
            raise ValueError(
                f"the policy must return finite actions ({episodes}, 1), got {action.shape}"
            )
        obs, reward, _, _, _ = envs.step(MAX_TORQUE * np.clip(action, -1, 1))
        returns += reward
    envs.close()
    return returns
