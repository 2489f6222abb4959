r"""Scores of the RL app.

Bandits (exact, from the data's modes): the expected reward of the actions (the mean
reward of the nearest mode; an action farther than 0.2 from every mode is
out-of-distribution and earns that mode's reward all the same, so the OOD rate is reported
beside it), the share of actions in the best safe mode, the OOD rate, the violation rate
(actions in the unsafe region of ``unsafe_bandit``) and the mode histogram.

Environments: the normalised score :math:`100 (R - R_{random}) / (R_{expert} -
R_{random})` with the references on the data's card.

Latency: the median wall time to act for a batch of states (the first call is a warm-up).
"""

from __future__ import annotations

import dataclasses
import itertools

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from experiments.rl.datasets import UNSAFE_RADIUS, OfflineData
from experiments.rl.methods import act
from experiments.rl.settings import Settings
from experiments.rl.training import Trained
from experiments.shared.timing import timed

__all__ = [
    "Standardiser", "bandit_scores", "latency", "normalised", "standardise", "violations",
]  # fmt: skip


def violations(task: str, actions: np.ndarray) -> np.ndarray:
    """Whether each action violates the task's safety constraint."""
    if task == "unsafe_bandit":
        return np.linalg.norm(actions, axis=1) < UNSAFE_RADIUS
    return np.zeros(len(actions), bool)


def bandit_scores(task: str, card: dict[str, Any], actions: np.ndarray) -> dict[str, Any]:
    """Exact scores of bandit actions (see the module), from the data's modes."""
    modes, rewards = np.array(card["modes"]), np.array(card["mode_rewards"])
    distance = np.linalg.norm(actions[:, None] - modes[None], axis=-1)
    nearest = distance.argmin(1)
    histogram = np.bincount(nearest, minlength=len(modes)) / len(actions)
    safe = ~violations(task, modes)
    best = int(np.flatnonzero(safe)[rewards[safe].argmax()])
    return {
        "reward": float(rewards[nearest].mean()),
        "best_mode": float(histogram[best]),
        "ood": float((distance.min(1) > 0.2).mean()),
        "violations": float(violations(task, actions).mean()),
        "modes": [round(float(h), 4) for h in histogram],
    }


def normalised(returns: np.ndarray, card: dict[str, Any]) -> np.ndarray:
    """:math:`100 (R - R_{random}) / (R_{expert} - R_{random})` with the card's references."""
    refs = card["references"]
    return 100 * (returns - refs["random"]) / (refs["expert"] - refs["random"])


@dataclass(frozen=True)
class Standardiser:
    r"""Maps observations to standardised states, :math:`(s - \mu) / \sigma` (float32)."""

    mean: np.ndarray
    std: np.ndarray

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return ((np.asarray(obs, np.float32) - self.mean) / self.std).astype(np.float32)


def standardise(data: OfflineData) -> tuple[OfflineData, Standardiser]:
    """The data with states and next states standardised by the states' mean and standard
    deviation (floored at 1e-2), and the map it applies to observations."""
    observe = Standardiser(data.states.mean(0), np.maximum(data.states.std(0), 1e-2))
    scaled = dataclasses.replace(
        data, states=observe(data.states), next_states=observe(data.next_states)
    )
    return scaled, observe


def latency(
    settings: Settings,
    trained: Trained,
    data: OfflineData,
    methods: list[str],
    states: int,
    steps: int,
    repeats: int,
    threads: int,
) -> dict[str, float]:
    """Median milliseconds per batch of ``states`` actions with ``steps`` DDPM steps at
    scale 1 on ``threads`` CPU threads, per method (``repeats`` timed calls after a
    warm-up)."""
    fast = dataclasses.replace(settings, steps=steps)
    rows = torch.arange(states) % len(data.states)
    batch = torch.from_numpy(data.states)[rows]
    timings = {}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for method in methods:
            seeds = itertools.count()  # the warm-up call draws seed 0, timed calls 1, 2, ...

            def run(method: str = method, seeds: itertools.count = seeds) -> torch.Tensor:
                return act(fast, method, 1.0, trained, batch, next(seeds))

            timings[method] = 1000 * timed(run, repeats)[1]
    finally:
        torch.set_num_threads(before)
    return timings
