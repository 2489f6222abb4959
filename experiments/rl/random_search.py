r"""Augmented Random Search (ARS V2-t, Mania, Guy & Recht, 2018): the quickly trained
behaviour policies of the HalfCheetah data sets.

A policy is linear in the normalised observation, :math:`a = \operatorname{clip}(M (s -
\mu) / \sigma, -1, 1)` with :math:`M \in \mathbb{R}^{A \times S}` (zero at the start) and
:math:`(\mu, \sigma)` the running mean and standard deviation of every observation seen so
far (V2). An iteration draws ``directions`` Gaussian directions :math:`\delta_k`, runs one
episode with :math:`M \pm \nu \delta_k` each (all :math:`2 N` episodes stepped as one
vector environment), keeps the ``top`` directions by :math:`\max(r_k^+, r_k^-)` (-t) and
steps

.. math:: M \leftarrow M + \frac{\alpha}{b\, \sigma_R} \sum_{k \in \text{top}}
    (r_k^+ - r_k^-)\, \delta_k,

with :math:`\sigma_R` the standard deviation of the kept returns. Every iteration's policy
is kept as a snapshot, with its own return measured every ``evaluate_every`` iterations:
a ladder of behaviour policies from random to the final one. The settings are those of the
paper's HalfCheetah run (32 directions, top 4, :math:`\alpha = 0.02`, :math:`\nu = 0.03`).

The shipped snapshots of the HalfCheetah data sets, ``experiments/weights/cheetah-ars
.safetensors`` and the card ``cheetah-ars.md`` beside it, are written by

    python -m experiments.rl.ars install=true          # 60 iterations, about 5 min on 2 cores

and read by :func:`load` (safetensors only; a missing or corrupt file is a clear error).

References:
    | Simple random search provides a competitive approach to reinforcement learning
    | (Mania, Guy & Recht, 2018) https://arxiv.org/abs/1803.07055
"""

from __future__ import annotations

import json

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from experiments.rl import envs
from priors.files import atomic_write
from priors.weights import check_hash, content_hash

__all__ = ["WEIGHTS", "LinearPolicy", "Snapshots", "ars", "load", "rollout", "save"]

#: The folder of the shipped behaviour policies.
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


@dataclass(frozen=True)
class LinearPolicy:
    r"""An ARS policy :math:`a = \operatorname{clip}(M (s - \mu) / \sigma, -1, 1)`."""

    weights: np.ndarray  # (A, S)
    mean: np.ndarray  # (S,)
    std: np.ndarray  # (S,)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Actions :math:`(n, A)` from observations :math:`(n, S)`."""
        z = (np.asarray(obs, np.float64) - self.mean) / self.std
        return np.clip(z @ self.weights.T, -1, 1).astype(np.float32)


@dataclass(frozen=True)
class Snapshots:
    """The policy after every ARS iteration: ``weights`` :math:`(I, A, S)`, the
    normaliser's ``mean`` and ``std`` :math:`(I, S)`, ``returns`` :math:`(I,)` (the snapshot's
    mean return, NaN where it was not evaluated) and the environment steps taken so far."""

    weights: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    returns: np.ndarray
    env_steps: np.ndarray

    def __len__(self) -> int:
        return len(self.weights)

    def policy(self, i: int) -> LinearPolicy:
        return LinearPolicy(self.weights[i], self.mean[i], self.std[i])


def rollout(
    vector: Any,
    weights: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    steps: int,
    seeds: list[int],
) -> tuple[np.ndarray, np.ndarray]:
    """One episode per row of ``weights`` :math:`(n, A, S)` in a gymnasium vector
    environment of ``n`` copies, reset with ``seeds``: the returns :math:`(n,)` and every
    observation seen, :math:`(steps \\cdot n, S)`."""
    obs, _ = vector.reset(seed=seeds)
    returns, seen = np.zeros(len(weights)), []
    for _ in range(steps):
        seen.append(obs)
        z = (obs - mean) / std
        action = np.clip(np.einsum("nas,ns->na", weights, z), -1, 1)
        obs, reward, _, _, _ = vector.step(action)
        returns += reward
    return returns, np.concatenate(seen)


def ars(
    gym_id: str,
    state_dim: int,
    action_dim: int,
    steps: int,
    iterations: int,
    seed: int = 0,
    directions: int = 32,
    top: int = 4,
    step_size: float = 0.02,
    noise: float = 0.03,
    evaluate_every: int = 5,
    evaluate_episodes: int = 4,
) -> Snapshots:
    """Trains a linear policy by ARS V2-t (see the module) for ``iterations`` iterations of
    ``directions`` pairs of ``steps``-step episodes; returns every iteration's snapshot."""
    if iterations < 1 or directions < 1 or not 1 <= top <= directions:
        raise ValueError(
            f"need iterations >= 1 and 1 <= top <= directions, got {iterations}, {top}, "
            f"{directions}"
        )
    rng = np.random.default_rng(seed)
    weights = np.zeros((action_dim, state_dim))
    count, mean, m2 = 0, np.zeros(state_dim), np.zeros(state_dim)
    std = np.ones(state_dim)
    kept: dict[str, list] = {"weights": [], "mean": [], "std": [], "returns": [], "env_steps": []}
    env_steps = 0
    train, test = envs.vector(gym_id, 2 * directions), envs.vector(gym_id, evaluate_episodes)
    for i in range(iterations):
        delta = rng.standard_normal((directions, action_dim, state_dim))
        both = np.concatenate([weights + noise * delta, weights - noise * delta])
        seeds = [int(s) for s in rng.integers(0, 2**31, 2 * directions)]
        returns, seen = rollout(train, both, mean, std, steps, seeds)
        env_steps += len(seen)
        plus, minus = returns[:directions], returns[directions:]
        best = np.argsort(-np.maximum(plus, minus))[:top]
        spread = np.concatenate([plus[best], minus[best]]).std() + 1e-8
        step = np.einsum("k,kas->as", plus[best] - minus[best], delta[best])
        weights = weights + step_size / (top * spread) * step
        # V2: the normaliser takes in this iteration's observations (Chan et al.'s merge)
        n, batch_mean = len(seen), seen.mean(0)
        diff = batch_mean - mean
        m2 = m2 + seen.var(0) * n + diff**2 * count * n / (count + n)
        mean, count = mean + diff * n / (count + n), count + n
        std = np.maximum(np.sqrt(m2 / count), 1e-2)
        value = np.nan
        if (i + 1) % evaluate_every == 0 or i + 1 == iterations:
            eval_seeds = [int(s) for s in rng.integers(0, 2**31, evaluate_episodes)]
            tiled = np.broadcast_to(weights, (evaluate_episodes, *weights.shape))
            value = float(rollout(test, tiled, mean, std, steps, eval_seeds)[0].mean())
        for key, v in zip(kept, (weights, mean, std, value, env_steps), strict=True):
            kept[key].append(np.copy(v))
    train.close()
    test.close()
    return Snapshots(**{k: np.array(v) for k, v in kept.items()})


def save(snapshots: Snapshots, path: str | Path, card: dict[str, Any]) -> Path:
    """Writes the snapshots (float64 tensors) and ``card`` (JSON metadata) as safetensors,
    atomically."""
    from safetensors.numpy import save_file

    path = Path(path)
    tensors = {f.name: np.ascontiguousarray(getattr(snapshots, f.name)) for f in fields(Snapshots)}
    metadata = {"card": json.dumps(card)}
    metadata["sha256"] = content_hash(tensors, metadata)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def load(path: str | Path | None = None) -> tuple[Snapshots, dict[str, Any]]:
    """The snapshots and card of a file written by :func:`save` (the shipped HalfCheetah
    ones by default)."""
    from safetensors import SafetensorError, safe_open

    path = WEIGHTS / "cheetah-ars.safetensors" if path is None else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no ARS snapshots at {path}; run python -m experiments.rl.ars")
    try:
        with safe_open(str(path), "np") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
            metadata = f.metadata() or {}
        check_hash(arrays, metadata, path)
        card = json.loads(metadata["card"])
        snapshots = Snapshots(**arrays)
    except (SafetensorError, KeyError, TypeError, ValueError, OSError) as error:
        raise ValueError(f"{path} is not a valid ARS snapshot file ({error})") from error
    if snapshots.weights.ndim != 3:
        raise ValueError(
            f"{path}: weights must be (iterations, A, S), got {snapshots.weights.shape}"
        )
    n, s = len(snapshots.weights), snapshots.weights.shape[2]
    shapes = {"mean": (n, s), "std": (n, s), "returns": (n,), "env_steps": (n,)}
    for name, shape in shapes.items():
        if getattr(snapshots, name).shape != shape:
            raise ValueError(
                f"{path}: {name} has shape {getattr(snapshots, name).shape}, not {shape}"
            )
    return snapshots, card
