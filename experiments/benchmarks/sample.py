"""Sample a 2-D Gaussian-mixture prior with a chosen sampler and score it against exact draws.

    python -m experiments.benchmarks.sample                         # DPM-Solver++, 25 steps
    python -m experiments.benchmarks.sample sampler=heun schedule=edm steps=20
    python -m experiments.benchmarks.sample -m sampler=ddim,dpm_solver,heun,ddpm steps=10,25,50

Writes into the run folder: ``metrics.json`` (sliced Wasserstein distance to exact samples
beside the exact-vs-exact noise floor, mode weights, network evaluations per sample, wall
time) and ``samples.png`` (exact and sampled points over the prior's density).
"""

from __future__ import annotations

import logging
import time

from pathlib import Path
from typing import Any

import hydra
import matplotlib
import torch

from omegaconf import DictConfig, OmegaConf

import guided

from evaluation import random_directions, sliced_wasserstein
from experiments.shared.build import build
from experiments.shared.report import markdown_table, serve
from experiments.shared.runs import launch, write_metrics
from priors import Cost, GaussianMixture

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)


def build_prior(cfg: DictConfig) -> GaussianMixture:
    """The configured Gaussian mixture under the configured schedule."""
    schedule = build(cfg.schedule)
    prior = OmegaConf.to_container(cfg.prior)
    return GaussianMixture(
        torch.tensor(prior["weights"], dtype=torch.float64),
        torch.tensor(prior["means"], dtype=torch.float64),
        torch.tensor(prior["covs"], dtype=torch.float64),
        schedule,
    )


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Runs one configuration, writes ``metrics.json`` and ``samples.png`` into ``out_dir``."""
    if int(cfg.samples) < 2:
        raise ValueError(f"samples must be >= 2, got {cfg.samples}")
    prior = build_prior(cfg)
    if prior.shape != (2,):
        raise ValueError(f"this app plots 2-D priors, got dimension {prior.shape[0]}")
    sampler = build(cfg.sampler)
    ts = guided.time_grid(int(cfg.steps), str(cfg.grid), schedule=prior.schedule)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    n = int(cfg.samples)

    exact = prior.sample(n, generator)
    alpha_1, sigma_1 = prior.schedule(1.0)
    # Start from the exact marginal p_1 = alpha_1 * x + sigma_1 * eps of the mixture.
    x_T = alpha_1 * prior.sample(n, generator) + sigma_1 * torch.randn(
        n, 2, generator=generator, dtype=torch.float64
    )
    cost = Cost()
    start = time.perf_counter()
    x = sampler(prior, x_T, ts, generator=generator, cost=cost)
    wall = time.perf_counter() - start

    directions = random_directions(2, int(cfg.directions), generator)
    reference = prior.sample(n, generator)
    modes = prior.responsibilities(x).argmax(1)
    weights = modes.bincount(minlength=len(prior.weights)).double() / n
    metrics = {
        "sampler": type(sampler).__name__,
        "schedule": type(prior.schedule).__name__,
        "steps": int(cfg.steps),
        "grid": str(cfg.grid),
        "samples": n,
        "sliced_wasserstein": sliced_wasserstein(x, reference, directions),
        "sliced_wasserstein_exact_vs_exact": sliced_wasserstein(exact, reference, directions),
        "mode_weights": weights.tolist(),
        "mode_weights_exact": prior.weights.tolist(),
        "nfe_per_sample": cost.nfe,
        "wall_time_s": wall,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(prior, exact, x, metrics, out_dir / "samples.png")
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def plot(
    prior: GaussianMixture, exact: torch.Tensor, x: torch.Tensor, metrics: dict, path: Path
) -> None:
    """Exact and sampled points side by side over the prior's log-density."""
    lo = torch.minimum(exact.min(0).values, x.min(0).values) - 1
    hi = torch.maximum(exact.max(0).values, x.max(0).values) + 1
    gx, gy = torch.meshgrid(
        torch.linspace(float(lo[0]), float(hi[0]), 200, dtype=torch.float64),
        torch.linspace(float(lo[1]), float(hi[1]), 200, dtype=torch.float64),
        indexing="xy",
    )
    density = prior.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).reshape(gx.shape)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
    sampled = (
        f"{metrics['sampler']}, {metrics['steps']} steps, "
        f"{metrics['nfe_per_sample']:.0f} NFE\nSW = {metrics['sliced_wasserstein']:.3f} "
        f"(exact vs exact {metrics['sliced_wasserstein_exact_vs_exact']:.3f})"
    )
    titles = ("exact samples", sampled)
    for ax, points, title, color in zip(
        axes, (exact, x), titles, ("tab:blue", "tab:orange"), strict=True
    ):
        ax.contour(gx, gy, density.clamp(min=-12), levels=12, cmap="Greys", linewidths=0.6)
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4, color=color)
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal")
    fig.suptitle(f"{metrics['schedule']}, {metrics['grid']} grid")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@hydra.main(config_path="../configs", config_name="sample", version_base=None)
def main(cfg: DictConfig) -> None:
    """Hydra entry point: runs :func:`run` in the run folder and logs the metrics."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    serve(cfg, run, log, lambda metrics: markdown_table([metrics]))


if __name__ == "__main__":
    launch(main)
