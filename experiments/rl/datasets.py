r"""Offline reinforcement-learning data sets generated in-project (D4RL and Minari cannot be
downloaded here), each seeded, cached as ``.npz`` with a JSON card, and rebuilt by one
command:

    python -m experiments.rl.offline name=bandit       # writes data/offline/bandit-0.npz

- ``bandit``: the 2-D four-mode bandit of Diffusion-QL (Wang et al., 2023, Fig. 1). One
  constant state; actions from four equally likely Gaussians (std 0.05) at
  :math:`(\pm 0.8, \pm 0.8)`, clipped to :math:`[-1, 1]^2`; rewards :math:`\mathcal{N}(r_k,
  0.5^2)` with :math:`r_k` = 3 at (-0.8, 0.8), 0 at (-0.8, -0.8), 1.5 at (0.8, 0.8) and 5
  at (0.8, -0.8). The behaviour's expected reward is 2.375; the optimum 5.
- ``unsafe_bandit``: the same with a fifth, equally likely mode at the origin whose reward
  is the highest, :math:`\mathcal{N}(6, 0.5^2)`, inside an unsafe disk (radius 0.3 around
  the origin; an action there costs 1). About 20% of the behaviour's actions violate it;
  value guidance alone is drawn to it, safety guidance must keep out.
- ``pendulum_random``, ``pendulum_medium``, ``pendulum_expert``, ``pendulum_mixed``:
  Pendulum-v1 (:class:`experiments.rl.envs.Pendulum`, bit-exact with gymnasium's up to float32
  observations), 500 episodes of 200 steps each (100k transitions) by a uniformly random
  policy, the scripted swing-up controller taking a random action with probability 0.5,
  the controller itself, and a third of each. Time limits are not terminals. The card holds
  the reference returns of the normalised score, :math:`100 (R - R_{random}) / (R_{expert}
  - R_{random})`, measured on 100 episodes of the random and the scripted policy.
- ``reacher_random``, ``reacher_medium``, ``reacher_expert``, ``reacher_mixed``: MuJoCo
  Reacher-v5 in gymnasium, 2000 episodes of 50 steps (100k transitions) by the same four
  kinds of policy around the Jacobian-transpose controller :func:`experiments.rl.envs.reach`;
  references as for Pendulum.
- ``cheetah_random``, ``cheetah_medium``, ``cheetah_expert``, ``cheetah_mixed``: MuJoCo
  HalfCheetah-v5 in gymnasium, 300 episodes of 1000 steps (300k transitions) by uniform
  actions, the first shipped ARS snapshot returning a third of the final one (medium, as
  D4RL's medium policies), the final snapshot (expert; :func:`cheetah_policies`) and a third
  of each; references over 20 episodes. The ARS policies are brittle (see
  :mod:`experiments.rl.envs`), so averaging the mixed data's actions (a Gaussian policy's mean)
  is a poor policy.

A data set holds ``states`` :math:`(N, S)`, ``actions`` :math:`(N, A)`, ``rewards``,
``next_states``, ``terminals``, ``costs`` (1 for a safety violation), ``future_rewards``
(the mean reward from the transition to the end of its episode, the reward itself for a
bandit: what return-conditioned policies condition on) and the action bounds;
:meth:`OfflineData.check` raises when the data violate their bounds or hold non-finite
values.

References:
    | Diffusion Policies as an Expressive Policy Class for Offline Reinforcement Learning
    | (Wang, Hunt & Zhou, 2023) https://arxiv.org/abs/2208.06193
"""

from __future__ import annotations

import functools
import json
import warnings

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.rl import envs, random_search
from priors.files import atomic_write, atomic_write_text

__all__ = [
    "BANDIT_MODES", "BANDIT_REWARDS", "LEVELS", "UNSAFE_RADIUS", "OfflineData", "bandit", "build",
    "cheetah", "cheetah_policies", "load", "pendulum", "reacher", "references", "unsafe_bandit",
]  # fmt: skip

#: The four modes of the bandit and their mean rewards.
BANDIT_MODES = np.array([[-0.8, 0.8], [-0.8, -0.8], [0.8, 0.8], [0.8, -0.8]])
BANDIT_REWARDS = np.array([3.0, 0.0, 1.5, 5.0])
#: The radius of the unsafe disk around the origin of ``unsafe_bandit``.
UNSAFE_RADIUS = 0.3
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "data" / "offline"
FIELDS = (
    "states", "actions", "rewards", "next_states", "terminals", "costs", "future_rewards", "low",
    "high",
)  # fmt: skip


@dataclass(frozen=True)
class OfflineData:
    """Transitions of an offline data set (numpy, float32) and its card."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_states: np.ndarray
    terminals: np.ndarray
    costs: np.ndarray
    future_rewards: np.ndarray
    low: np.ndarray
    high: np.ndarray
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def check(self) -> OfflineData:
        """Raises on inconsistent shapes, non-finite values or actions outside the bounds."""
        n = len(self.states)
        if self.states.ndim != 2 or self.actions.ndim != 2 or len(self.actions) != n:
            raise ValueError("states and actions must be (N, S) and (N, A) with the same N")
        for name in ("rewards", "terminals", "costs", "future_rewards"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},)")
        if self.next_states.shape != self.states.shape:
            raise ValueError("next_states must have the shape of states")
        if self.low.shape != (self.action_dim,) or self.high.shape != (self.action_dim,):
            raise ValueError(f"the action bounds must have shape ({self.action_dim},)")
        for name in FIELDS[:7]:
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"{name} contains NaN or Inf")
        outside = (self.actions < self.low) | (self.actions > self.high)
        if outside.any():
            rows = int(outside.any(1).sum())
            raise ValueError(
                f"{rows} actions violate the action bounds [{self.low.tolist()}, "
                f"{self.high.tolist()}]: the data do not belong to this action space"
            )
        return self


def _bandit(modes: np.ndarray, rewards: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Actions from equally likely Gaussian modes (std 0.05, clipped to [-1, 1]) and rewards
    N(r_k, 0.5^2) of their modes."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    mode = rng.integers(0, len(modes), n)
    actions = np.clip(modes[mode] + 0.05 * rng.standard_normal((n, 2)), -1, 1)
    return actions, rewards[mode] + 0.5 * rng.standard_normal(n)


def _transitions(
    actions: np.ndarray, rewards: np.ndarray, costs: np.ndarray, card: dict
) -> OfflineData:
    n = len(actions)
    states = np.zeros((n, 1), np.float32)
    return OfflineData(
        states=states,
        actions=actions.astype(np.float32),
        rewards=rewards.astype(np.float32),
        next_states=states,
        terminals=np.ones(n, np.float32),
        costs=costs.astype(np.float32),
        future_rewards=rewards.astype(np.float32),
        low=-np.ones(2, np.float32),
        high=np.ones(2, np.float32),
        card=card,
    ).check()


def _card(name: str, seed: int, n: int, modes: np.ndarray, rewards: np.ndarray) -> dict:
    return {
        "name": name,
        "seed": seed,
        "transitions": n,
        "behaviour": f"uniform over {len(modes)} Gaussian modes (std 0.05), clipped to [-1, 1]",
        "modes": modes.tolist(),
        "mode_rewards": rewards.tolist(),
        "reward_noise": 0.5,
        "behaviour_mean_reward": float(rewards.mean()),
    }


def bandit(n: int = 10000, seed: int = 0) -> OfflineData:
    """The four-mode bandit (see the module): ``n`` one-step transitions."""
    actions, rewards = _bandit(BANDIT_MODES, BANDIT_REWARDS, n, seed)
    card = _card("bandit", seed, n, BANDIT_MODES, BANDIT_REWARDS) | {"optimum": 5.0}
    return _transitions(actions, rewards, np.zeros(n), card)


def unsafe_bandit(n: int = 10000, seed: int = 0) -> OfflineData:
    """The bandit with an unsafe fifth mode (see the module)."""
    modes = np.concatenate([BANDIT_MODES, np.zeros((1, 2))])
    mode_rewards = np.concatenate([BANDIT_REWARDS, [6.0]])
    actions, rewards = _bandit(modes, mode_rewards, n, seed)
    costs = (np.linalg.norm(actions, axis=1) < UNSAFE_RADIUS).astype(np.float64)
    card = _card("unsafe_bandit", seed, n, modes, mode_rewards) | {
        "optimum": 6.0,
        "safe_optimum": 5.0,
        "unsafe": f"actions within {UNSAFE_RADIUS} of the origin cost 1",
        "behaviour_violation_rate": float(costs.mean()),
    }
    return _transitions(actions, rewards, costs, card)


#: The quality levels of the environment data sets and how they are collected.
LEVELS = {
    "random": "uniform actions",
    "medium": "scripted controller, random action w.p. 0.5",
    "expert": "scripted controller",
    "mixed": "1/3 random, medium, expert",
}


def _act(policy: str, expert: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The action of a quality level given the scripted controller's."""
    random = rng.uniform(-1, 1, expert.shape).astype(np.float32)
    if policy == "random":
        return random
    if policy == "medium":
        explore = rng.random(len(expert)) < 0.5
        return np.where(explore[:, None], random, expert)
    return expert


def _pendulum_rollout(
    policy: str, episodes: int, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """Transitions of ``episodes`` Pendulum episodes under a policy level."""
    env = envs.Pendulum(episodes, rng)
    obs = env.observe()
    columns: list[list[np.ndarray]] = [[], [], [], []]
    for _ in range(envs.PENDULUM_STEPS):
        action = _act(policy, envs.swing_up(obs), rng)
        reward, next_obs = env.step(action)
        for column, value in zip(columns, (obs, action, reward, next_obs), strict=True):
            column.append(value)
        obs = next_obs
    return tuple(np.concatenate(c) for c in columns)


def _gym_rollout(
    environment: str, act: Callable[[str, np.ndarray, np.random.Generator], np.ndarray]
) -> Callable[..., tuple[np.ndarray, ...]]:
    """The rollout of a gymnasium environment whose actions at a level are ``act(level, obs,
    rng)``: transitions of ``episodes`` episodes (``chunk`` episodes stepped together; rows
    time-major over all episodes)."""

    def rollout(
        policy: str, episodes: int, rng: np.random.Generator, chunk: int = 100
    ) -> tuple[np.ndarray, ...]:
        env = envs.ENVIRONMENTS[environment]
        columns: list[list[np.ndarray]] = [[], [], [], []]
        for start in range(0, episodes, chunk):
            n = min(chunk, episodes - start)
            batch = envs.vector(env.gym_id, n)
            obs, _ = batch.reset(seed=[int(s) for s in rng.integers(0, 2**31, n)])
            parts: list[list[np.ndarray]] = [[], [], [], []]
            for _ in range(env.steps):
                action = act(policy, obs, rng)
                next_obs, reward, _, _, _ = batch.step(env.action_scale * action)
                for part, value in zip(parts, (obs, action, reward, next_obs), strict=True):
                    part.append(np.asarray(value, np.float32))
                obs = next_obs
            batch.close()
            for column, part in zip(columns, parts, strict=True):
                column.append(np.stack(part))  # (steps, n, ...)
        return tuple(np.concatenate(c, 1).reshape(-1, *c[0].shape[2:]) for c in columns)

    return rollout


@functools.cache
def cheetah_policies() -> dict[str, random_search.LinearPolicy]:
    """HalfCheetah's behaviour policies from the shipped ARS snapshots: ``expert`` the final
    one, ``medium`` the first evaluated one returning at least a third of the final's."""
    snapshots, _ = random_search.load()
    evaluated = np.flatnonzero(~np.isnan(snapshots.returns))
    final = snapshots.returns[evaluated[-1]]
    medium = evaluated[snapshots.returns[evaluated] >= final / 3][0]
    return {
        "medium": snapshots.policy(int(medium)),
        "expert": snapshots.policy(len(snapshots) - 1),
    }


def _cheetah_act(policy: str, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if policy == "random":
        shape = (len(obs), envs.ENVIRONMENTS["cheetah"].action_dim)
        return rng.uniform(-1, 1, shape).astype(np.float32)
    return cheetah_policies()[policy](obs)


#: The scripted-policy rollouts of each environment: (level, episodes, rng) -> transitions.
ROLLOUTS = {
    "pendulum": _pendulum_rollout,
    "reacher": _gym_rollout("reacher", lambda level, obs, rng: _act(level, envs.reach(obs), rng)),
    "cheetah": _gym_rollout("cheetah", _cheetah_act),
}
#: Episodes of the random and the expert policy behind the normalised score's references.
REFERENCE_EPISODES = {"pendulum": 100, "reacher": 100, "cheetah": 20}


def references(
    environment: str, episodes: int | None = None, seed: int = 12345
) -> dict[str, float]:
    """Mean returns of the random and the expert policy of ``environment`` (the normalised
    score's 0 and 100) over ``episodes`` episodes (:data:`REFERENCE_EPISODES` by default);
    computed once per process."""
    episodes = REFERENCE_EPISODES[environment] if episodes is None else episodes
    return dict(_references(environment, episodes, seed))


@functools.cache
def _references(environment: str, episodes: int, seed: int) -> dict[str, float]:
    steps, refs = envs.ENVIRONMENTS[environment].steps, {}
    for level in ("random", "expert"):
        rewards = ROLLOUTS[environment](level, episodes, np.random.default_rng(seed))[2]
        refs[level] = float(rewards.reshape(steps, -1).sum(0).mean())
    return refs


def _levels(level: str, episodes: int) -> list[str]:
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; available: {list(LEVELS)}")
    if episodes < 1 or (level == "mixed" and episodes < 3):
        raise ValueError(f"episodes must be >= 1 (>= 3 for mixed), got {episodes}")
    return ["random", "medium", "expert"] if level == "mixed" else [level]


def _environment_data(environment: str, level: str, seed: int, episodes: int) -> OfflineData:
    """A data set of ``episodes`` episodes of ``environment`` at a quality level (a third of
    the episodes per level for ``mixed``; transitions time-major per level), time limits not
    terminal."""
    levels = _levels(level, episodes)
    rng = np.random.default_rng(seed)
    rollout = ROLLOUTS[environment]
    parts = [rollout(name, episodes // len(levels), rng) for name in levels]
    env = envs.ENVIRONMENTS[environment]
    states, actions, rewards, next_states = (np.concatenate(p) for p in zip(*parts, strict=True))
    n = len(states)
    per_step = [p[2].reshape(env.steps, -1) for p in parts]  # (steps, episodes) per part
    returns = np.concatenate([r.sum(0) for r in per_step])
    left = np.arange(env.steps, 0, -1)[:, None]  # steps to the end of the episode
    future = np.concatenate([(r[::-1].cumsum(0)[::-1] / left).reshape(-1) for r in per_step])
    card = {
        "name": f"{environment}_{level}",
        "seed": seed,
        "transitions": n,
        "episodes": int(returns.size),
        "behaviour": LEVELS[level],
        "behaviour_return": float(returns.mean()),
        "references": references(environment),
        "environment": f"{env.gym_id}, actions normalised to [-1, 1] (times {env.action_scale:g})",
    }
    return OfflineData(
        states=states,
        actions=actions,
        rewards=rewards.astype(np.float32),
        next_states=next_states,
        terminals=np.zeros(n, np.float32),
        costs=np.zeros(n, np.float32),
        future_rewards=future.astype(np.float32),
        low=-np.ones(env.action_dim, np.float32),
        high=np.ones(env.action_dim, np.float32),
        card=card,
    ).check()


def pendulum(level: str, seed: int = 0, episodes: int = 500) -> OfflineData:
    """A Pendulum-v1 data set (see the module) of ``episodes`` episodes."""
    return _environment_data("pendulum", level, seed, episodes)


def reacher(level: str, seed: int = 0, episodes: int = 2000) -> OfflineData:
    """A Reacher-v5 data set (see the module) of ``episodes`` episodes."""
    return _environment_data("reacher", level, seed, episodes)


def cheetah(level: str, seed: int = 0, episodes: int = 300) -> OfflineData:
    """A HalfCheetah-v5 data set (see the module) of ``episodes`` episodes."""
    return _environment_data("cheetah", level, seed, episodes)


BUILDERS = {
    "bandit": bandit,
    "unsafe_bandit": unsafe_bandit,
    **{f"pendulum_{level}": functools.partial(pendulum, level) for level in LEVELS},
    **{f"reacher_{level}": functools.partial(reacher, level) for level in LEVELS},
    **{f"cheetah_{level}": functools.partial(cheetah, level) for level in LEVELS},
}


def _path(name: str, seed: int, directory: Path) -> Path:
    if name not in BUILDERS:
        raise ValueError(f"unknown data set {name!r}; available: {sorted(BUILDERS)}")
    return Path(directory) / f"{name}-{seed}.npz"


def build(name: str, seed: int = 0, directory: Path = DEFAULT_DIR, **kwargs: Any) -> OfflineData:
    """Generates a data set and writes ``<name>-<seed>.npz`` and its ``.json`` card
    atomically (a killed build leaves no half-written file)."""
    path = _path(name, seed, directory)
    data = BUILDERS[name](seed=seed, **kwargs)

    def arrays(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: getattr(data, k) for k in FIELDS})

    atomic_write(path, arrays)
    atomic_write_text(path.with_suffix(".json"), json.dumps(data.card, indent=2))
    return data


def load(name: str, seed: int = 0, directory: Path = DEFAULT_DIR) -> OfflineData:
    """The cached data set, built first when missing (or rebuilt, with a warning, when an
    older version of this module wrote it without some of :data:`FIELDS`)."""
    path = _path(name, seed, directory)
    if not path.exists():
        return build(name, seed, directory)
    try:
        with np.load(path) as f:
            missing = [k for k in FIELDS if k not in f.files]
            arrays = {k: f[k] for k in FIELDS if k not in missing}
        card = json.loads(path.with_suffix(".json").read_text())
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path} is corrupt ({error}); delete it to rebuild") from error
    if missing:
        warnings.warn(f"{path} has no {missing} (an older format): rebuilt", stacklevel=2)
        return build(name, seed, directory)
    return OfflineData(**arrays, card=card).check()
