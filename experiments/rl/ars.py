"""Trains the ARS behaviour policies of an environment (:mod:`experiments.rl.random_search`)
and, with ``install=true``, ships them.

    python -m experiments.rl.ars install=true          # HalfCheetah, about 5 min on 2 cores
"""

from __future__ import annotations

import logging
import os
import shutil
import time

from pathlib import Path

import hydra
import numpy as np

from omegaconf import DictConfig

from experiments.rl import envs
from experiments.rl.random_search import WEIGHTS, Snapshots, ars, save
from experiments.shared.report import serve
from experiments.shared.runs import launch, write_metrics
from priors.files import atomic_write_text

log = logging.getLogger(__name__)


def _card(cfg: DictConfig, snapshots: Snapshots, wall: float) -> str:
    evaluated = np.flatnonzero(~np.isnan(snapshots.returns))
    rows = "\n".join(
        f"| {i + 1} | {snapshots.env_steps[i]} | {snapshots.returns[i]:.0f} |" for i in evaluated
    )
    return (
        f"# {cfg.environment}-ars\n\n"
        f"- kind: ARS V2-t linear policies (experiments.rl.ars), one snapshot per iteration\n"
        f"- environment: {envs.ENVIRONMENTS[cfg.environment].gym_id}\n"
        f"- command: `python -m experiments.rl.ars environment={cfg.environment} "
        f"iterations={cfg.iterations} seed={cfg.seed} install=true`\n"
        f"- settings: {cfg.directions} directions, top {cfg.top}, step {cfg.step_size}, "
        f"noise {cfg.noise}; wall time {wall:.0f} s on {os.cpu_count()} CPU(s)\n"
        f"- used by: `experiments.rl.offline` {cfg.environment}_* data sets (expert: the last "
        f"snapshot; medium: the first evaluated one returning a third of the last's)\n\n"
        f"| iteration | environment steps | return (mean of {cfg.evaluate_episodes} episodes) |\n"
        f"|---|---|---|\n{rows}\n"
    )


@hydra.main(version_base=None, config_path="../configs/ars", config_name="ars")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log, lambda metrics: metrics["card"])


def run(cfg: DictConfig, out: Path) -> dict:
    """Trains the policies, writes them and their card (and installs them if asked)."""
    if cfg.environment not in envs.ENVIRONMENTS:
        raise ValueError(
            f"unknown environment {cfg.environment!r}; available: {list(envs.ENVIRONMENTS)}"
        )
    env = envs.ENVIRONMENTS[cfg.environment]
    start = time.perf_counter()
    snapshots = ars(
        env.gym_id, env.state_dim, env.action_dim, env.steps, int(cfg.iterations),
        seed=int(cfg.seed), directions=int(cfg.directions), top=int(cfg.top),
        step_size=float(cfg.step_size), noise=float(cfg.noise),
        evaluate_every=int(cfg.evaluate_every), evaluate_episodes=int(cfg.evaluate_episodes),
    )  # fmt: skip
    wall = time.perf_counter() - start
    name = f"{cfg.environment}-ars"
    card = {k: cfg[k] for k in cfg if k != "install"} | {"wall_s": wall}
    path = save(snapshots, out / f"{name}.safetensors", card)
    text = _card(cfg, snapshots, wall)
    atomic_write_text(out / f"{name}.md", text)
    if cfg.install:
        WEIGHTS.mkdir(exist_ok=True)
        shutil.copyfile(path, WEIGHTS / path.name)
        shutil.copyfile(out / f"{name}.md", WEIGHTS / f"{name}.md")
    metrics = {"environment": str(cfg.environment), "wall_s": wall, "weights": str(path)}
    metrics["card"] = text
    write_metrics(metrics, out)
    return metrics


if __name__ == "__main__":
    launch(main)
