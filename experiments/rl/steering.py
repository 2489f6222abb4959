r"""Diffusion policies steered by value guidance, on offline data built in-project.

    python -m experiments.rl.steering                         # the four-mode bandit
    python -m experiments.rl.steering task=unsafe_bandit      # safety guidance
    python -m experiments.rl.steering task=pendulum_mixed     # Pendulum-v1, 3 seeds in gymnasium
    python -m experiments.rl.steering task=reacher_mixed      # MuJoCo Reacher-v5, 3 seeds
    python -m experiments.rl.steering task=cheetah_mixed      # MuJoCo HalfCheetah-v5 (ARS data)
    python -m experiments.rl.steering 'scales=[0,1,3,10]' candidates=16

``task`` picks a config of ``configs/rl/task`` (the data set and the settings tuned for it).
The networks are trained offline (:mod:`experiments.rl.training`) and each method of
``methods`` acts (:mod:`experiments.rl.methods`) at every scale of ``scales`` if it has a
scale. Bandits: ``samples`` actions scored exactly (:mod:`experiments.rl.scoring`).
Environments: every method is trained for each seed of ``seeds`` and evaluated on
``episodes`` gymnasium episodes (one batch through the sampler per step; with
``normalise_states`` the networks see states standardised by the data's statistics),
scored by the normalised return, mean and standard deviation over seeds. Latency: the
median wall time to act for ``latency.states`` states with ``latency.steps`` DDPM steps on
``latency.threads`` CPU threads.

Writes ``table.md``, figures (bandits: ``scales.png`` and ``actions.png``; environments:
``scores.png``; one panel per kind of scale), the trained networks (``policy/``, or
``policy-seed<k>/`` per seed: load them with :func:`experiments.rl.saved.load`) and
``metrics.json`` last.
"""

from __future__ import annotations

import logging
import time

from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch

from omegaconf import DictConfig, OmegaConf

from experiments.rl import datasets, envs, report, saved
from experiments.rl.methods import METHODS, act, as_policy, needs
from experiments.rl.scoring import Standardiser, bandit_scores, latency, normalised, standardise
from experiments.rl.settings import Settings
from experiments.rl.training import Trained, train_all
from experiments.shared.report import progress, serve
from experiments.shared.runs import launch, write_metrics
from priors.files import atomic_write_text

log = logging.getLogger(__name__)


def _settings(cfg: DictConfig) -> Settings:
    """Checks what the settings do not, then the settings (everything before any work)."""
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; available: {list(METHODS)}")
    if cfg.dataset not in datasets.BUILDERS:
        raise ValueError(
            f"unknown dataset {cfg.dataset!r}; available: {sorted(datasets.BUILDERS)}"
        )
    if not cfg.seeds:
        raise ValueError("seeds must list at least one training seed")
    for key in ("samples", "episodes"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    if any(float(s) < 0 for s in cfg.scales):
        raise ValueError(f"scales must be >= 0, got {list(cfg.scales)}")
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return Settings.from_mapping(plain)


def _scales(cfg: DictConfig, method: str) -> list[float]:
    return [float(s) for s in cfg.scales] if METHODS[method].scale is not None else [0.0]


def _context(cfg: DictConfig) -> dict[str, Any]:
    """What the report needs of the configuration, stored in the metrics."""
    keys = ("samples", "steps", "candidates", "episodes", "shown_scale")
    out: dict[str, Any] = {k: cfg[k] for k in keys}
    out["seeds"] = [int(s) for s in cfg.seeds]
    out["latency"] = OmegaConf.to_container(cfg.latency)
    return out


def _latency(cfg: DictConfig, settings: Settings, trained: Trained, data: Any) -> dict:
    node = cfg.latency
    log.info("latency: %d states, %d steps, %d repeats", node.states, node.steps, node.repeats)
    return latency(
        settings, trained, data, list(cfg.methods), int(node.states), int(node.steps),
        int(node.repeats), int(node.threads),
    )  # fmt: skip


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    torch.set_num_threads(int(cfg.threads))
    settings = _settings(cfg)
    directory = datasets.DEFAULT_DIR if cfg.data_dir is None else Path(cfg.data_dir)
    data = datasets.load(str(cfg.dataset), settings.seed, directory)
    if envs.environment_of(str(cfg.dataset)) is not None:
        return run_env(cfg, settings, data, out_dir)
    log.info("training on %s (%d transitions)", cfg.dataset, len(data.states))
    start = time.perf_counter()
    trained = train_all(settings, data, needs(list(cfg.methods)))
    train_s = time.perf_counter() - start
    saved.save(out_dir / "policy", trained, settings, str(cfg.dataset))
    states = torch.from_numpy(data.states[: int(cfg.samples)])
    states = states[torch.arange(int(cfg.samples)) % len(states)]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    shown: dict[str, np.ndarray] = {}
    jobs = sum(len(_scales(cfg, m)) for m in cfg.methods)
    with progress(jobs, "methods x scales", "run") as bar:
        for method in cfg.methods:
            results[method] = {}
            for scale in _scales(cfg, method):
                start = time.perf_counter()
                actions = act(settings, method, scale, trained, states, 7).numpy()
                scores = bandit_scores(str(cfg.dataset), data.card, actions)
                results[method][f"{scale:g}"] = scores | {"wall_s": time.perf_counter() - start}
                log.info("%s at scale %g: reward %.2f", method, scale, scores["reward"])
                if METHODS[method].scale is None or scale == float(cfg.shown_scale):
                    shown[method] = actions
                bar.update()
    metrics = {
        "dataset": str(cfg.dataset),
        "settings": _context(cfg),
        "latency_ms": _latency(cfg, settings, trained, data),
        "data": data.card,
        "results": results,
        "train_s": train_s,
        "data_scores": bandit_scores(str(cfg.dataset), data.card, data.actions),
    }
    atomic_write_text(out_dir / "table.md", report.bandit_table(metrics))
    report.bandit_figures(metrics, shown, data.actions, out_dir)
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def run_env(
    cfg: DictConfig, settings: Settings, data: datasets.OfflineData, out_dir: Path
) -> dict[str, Any]:
    """Trains and evaluates every method in gymnasium for every seed of ``cfg.seeds``
    (``episodes`` episodes each, the episodes of a seed batched through the sampler)."""
    environment = str(cfg.dataset).split("_")[0]
    observe: Standardiser | None = None
    if cfg.normalise_states:
        data, observe = standardise(data)
    scores: dict[str, dict[str, list[float]]] = {}
    returns: dict[str, dict[str, list[float]]] = {}
    timing: dict[str, float] = {}
    start = time.perf_counter()
    jobs = len(cfg.seeds) * sum(len(_scales(cfg, m)) for m in cfg.methods)
    with progress(jobs, "seeds x methods x scales", "run") as bar:
        for seed in cfg.seeds:
            seeded = Settings.from_mapping(settings.to_dict() | {"seed": int(seed)})
            log.info("seed %d: training on %s", seed, cfg.dataset)
            trained = train_all(seeded, data, needs(list(cfg.methods)))
            saved.save(out_dir / f"policy-seed{seed}", trained, seeded, str(cfg.dataset), observe)
            if not timing:
                timing = _latency(cfg, settings, trained, data)
            for method in cfg.methods:
                for scale in _scales(cfg, method):
                    policy = as_policy(seeded, method, scale, trained, observe or np.asarray)
                    episode_returns = envs.evaluate(
                        policy, int(cfg.episodes), 10000 * (int(seed) + 1), environment
                    )
                    key = f"{scale:g}"
                    score = float(normalised(episode_returns, data.card).mean())
                    scores.setdefault(method, {}).setdefault(key, []).append(score)
                    returns.setdefault(method, {}).setdefault(key, []).append(
                        float(episode_returns.mean())
                    )
                    log.info("seed %d %s at scale %s: score %.1f", seed, method, key, score)
                    bar.update()
    results = {
        method: {
            key: {
                "score": float(np.mean(v)),
                "score_std": float(np.std(v)),
                "per_seed": v,
                "return": float(np.mean(returns[method][key])),
            }
            for key, v in by_scale.items()
        }
        for method, by_scale in scores.items()
    }
    metrics = {
        "dataset": str(cfg.dataset),
        "settings": _context(cfg),
        "latency_ms": timing,
        "data": data.card,
        "results": results,
        "seeds": [int(s) for s in cfg.seeds],
        "episodes": int(cfg.episodes),
        "wall_s": time.perf_counter() - start,
        "data_score": float(normalised(np.array(data.card["behaviour_return"]), data.card)),
    }
    atomic_write_text(out_dir / "table.md", report.env_table(metrics))
    report.env_figure(metrics, out_dir / "scores.png")
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


@hydra.main(version_base=None, config_path="../configs/rl", config_name="rl")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log)


if __name__ == "__main__":
    launch(main)
