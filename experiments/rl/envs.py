r"""Environments for the offline RL suite: a batched numpy Pendulum-v1 (bit-exact with
gymnasium's, so data sets of a million transitions take a second), its scripted swing-up
controller, Reacher's scripted controller, and evaluation of a policy in gymnasium itself.

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

Reacher-v5 (gymnasium 1.x, MuJoCo): a two-link arm (links 0.1 and 0.11) reaches a random
target in 50 steps; observation :math:`(\cos q, \sin q, p^\star, \dot q, p - p^\star)`
(10 values), torques :math:`u \in [-1, 1]^2`, reward :math:`-\lVert p - p^\star \rVert -
\lVert u \rVert^2`. Its scripted controller is a Jacobian-transpose PD law,
:math:`u = J(q)^\top (-k_p (p - p^\star)) - k_d \dot q` with :math:`k_p = 20`,
:math:`k_d = 0.1`.

HalfCheetah-v5 (gymnasium 1.x, MuJoCo): a planar runner, 1000 steps, 17 observations (joint
angles and velocities without the x position), torques :math:`u \in [-1, 1]^6`, reward
:math:`\dot x - 0.1 \lVert u \rVert^2`. No controller is scripted: its behaviour policies
are linear policies trained by ARS (:mod:`experiments.rl.ars`). They are brittle: the final
one returns about 3400, but 2100 with its actions scaled by 0.8 and 500 by 0.67, so the
mean of a mixture of good and random actions is a poor policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ENVIRONMENTS", "PENDULUM_STEPS", "Environment", "Pendulum", "Policy", "environment_of",
    "evaluate", "reach", "swing_up", "vector",
]  # fmt: skip

#: The episode length of Pendulum-v1.
PENDULUM_STEPS = 200
MAX_TORQUE, MAX_SPEED, DT, G = 2.0, 8.0, 0.05, 10.0
#: Reacher-v5's link lengths (shoulder to elbow, elbow to fingertip).
REACHER_LINKS = (0.1, 0.11)


@dataclass(frozen=True)
class Environment:
    """A gymnasium task of the suite: its id, episode length, observation and action sizes,
    and the factor from normalised actions in [-1, 1] to the environment's."""

    gym_id: str
    steps: int
    state_dim: int
    action_dim: int
    action_scale: float


#: The environments, by the prefix of their data sets' names.
ENVIRONMENTS = {
    "pendulum": Environment("Pendulum-v1", PENDULUM_STEPS, 3, 1, MAX_TORQUE),
    "reacher": Environment("Reacher-v5", 50, 10, 2, 1.0),
    "cheetah": Environment("HalfCheetah-v5", 1000, 17, 6, 1.0),
}


def environment_of(dataset: str) -> Environment | None:
    """The environment a data set was collected in (``None`` for a bandit)."""
    return ENVIRONMENTS.get(dataset.split("_")[0])


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


def reach(obs: np.ndarray, kp: float = 20.0, kd: float = 0.1) -> np.ndarray:
    r"""Reacher's scripted controller (see the module): actions :math:`(n, 2)` from
    observations :math:`(n, 10)`."""
    obs = np.asarray(obs, np.float64)
    q1 = np.arctan2(obs[:, 2], obs[:, 0])
    q12 = q1 + np.arctan2(obs[:, 3], obs[:, 1])
    (l1, l2), force = REACHER_LINKS, -kp * obs[:, 8:10]
    jacobian = np.stack(  # d(tip) / d(q1, q2), rows x and y
        [
            np.stack([-l1 * np.sin(q1) - l2 * np.sin(q12), -l2 * np.sin(q12)], -1),
            np.stack([l1 * np.cos(q1) + l2 * np.cos(q12), l2 * np.cos(q12)], -1),
        ],
        1,
    )
    u = np.einsum("nij,ni->nj", jacobian, force) - kd * obs[:, 6:8]
    return np.clip(u, -1, 1).astype(np.float32)


def vector(gym_id: str, n: int) -> Any:
    """``n`` copies of the gymnasium environment ``gym_id`` stepped as one synchronous vector
    environment (the one way the suite steps gymnasium episodes together)."""
    import gymnasium as gym

    return gym.vector.SyncVectorEnv([lambda: gym.make(gym_id) for _ in range(n)])


def evaluate(
    policy: Policy, episodes: int, seed: int, environment: str = "pendulum"
) -> np.ndarray:
    """Returns of ``episodes`` gymnasium episodes of ``environment`` (a key of
    :data:`ENVIRONMENTS`; seeds ``seed``, ``seed + 1``, ...) under ``policy``
    (observations :math:`(n, S)` to normalised actions :math:`(n, A)`), all episodes stepped
    as one vector environment."""
    if environment not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {environment!r}; available: {list(ENVIRONMENTS)}")
    env = ENVIRONMENTS[environment]
    batch = vector(env.gym_id, episodes)
    obs, _ = batch.reset(seed=[seed + i for i in range(episodes)])
    returns = np.zeros(episodes)
    for _ in range(env.steps):
        action = np.asarray(policy(obs), dtype=np.float32)
        if action.shape != (episodes, env.action_dim) or not np.isfinite(action).all():
            raise ValueError(
                f"the policy must return finite actions ({episodes}, {env.action_dim}), got "
                f"{action.shape}"
            )
        obs, reward, _, _, _ = batch.step(env.action_scale * np.clip(action, -1, 1))
        returns += reward
    batch.close()
    return returns
