r"""Side-by-side benchmark against deepinv, in one run on the same work.

    python -m experiments.benchmarks.bench
    python -m experiments.benchmarks.bench steps=50 images=4 task=sr4

For each pair of ``pairs`` (ours, deepinv's loop through :mod:`experiments.shared.peers`), both
restore the same held-out images of the shipped ``prior`` from the same measurement (task
``task``, noise ``sigma_y``), from the same initial noise, over ``steps`` steps, and report
the PSNR of the restorations, the network evaluations and VJPs per sample (counted by our
denoiser, so both sides are counted alike), the wall time (median of ``repeats``) and the
ratios ours / deepinv's.

Two floors of our own machinery, measured in the same run:

- *guided step vs. forward + VJP*: the wall time of our DPS run against ``steps`` bare
  network evaluations with one vector-Jacobian product each on the same batch (the least
  any gradient-guided step can cost), the two timed in alternation;
- *CFG batched vs. two passes*: :class:`guided.ClassifierFree` (conditional and
  unconditional rows in one network call) against the same guidance with two separate
  calls per step, on the class-conditional prior.

With ``samples`` above 1 each side also restores the same measurement from ``samples``
other noise seeds (:func:`spread`): the PSNR of one sample (averaged over seeds, far less
noisy than one run's), of the samples' mean and their per-pixel spread, which tells a
sampler that is closer to the posterior mean from one that restores better.

Writes ``metrics.json``, ``bench.csv``, ``table.md`` and ``bench.png`` (wall time and PSNR
per method, ours beside deepinv's).
"""

from __future__ import annotations

import csv
import logging

from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import matplotlib
import torch

from omegaconf import DictConfig

import guided
import operators
import priors

from experiments.benchmarks.floors import cfg_floor, vjp_floor
from experiments.shared.build import build, build_method
from experiments.shared.data import held_out
from experiments.shared.metrics import psnr
from experiments.shared.report import progress, serve
from experiments.shared.runs import launch, write_metrics
from experiments.shared.seeds import generators
from experiments.shared.timing import peak_memory, timed, timed_pair

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)


def _check(cfg: DictConfig) -> None:
    for key in ("images", "steps", "repeats", "threads", "samples"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    if float(cfg.sigma_y) < 0:
        raise ValueError(f"sigma_y must be >= 0, got {cfg.sigma_y}")
    if cfg.task not in cfg.tasks_available:
        raise ValueError(f"unknown task {cfg.task!r}; available: {list(cfg.tasks_available)}")
    for pair, sides in cfg.pairs.items():
        missing = [m for m in (sides.ours, sides.theirs) if m not in cfg.methods]
        if missing:
            raise ValueError(f"pair {pair!r} names unknown methods {missing}")


def compare(
    cfg: DictConfig, prior: priors.Denoiser, truth: torch.Tensor
) -> tuple[dict[str, dict[str, Any]], dict[str, Callable[[], Any]]]:
    """Every pair on the same measurement and initial noise: PSNR, costs, wall times, peak
    memory; and our side's run of each pair (for the floor)."""
    op = build(cfg.tasks_available[cfg.task], in_shape=tuple(prior.shape))
    sigma_y, rows = float(cfg.sigma_y), truth.shape[0]
    g = torch.Generator().manual_seed(int(cfg.seed))
    y = operators.GaussianNoise(sigma_y)(op(truth), g) if sigma_y > 0 else op(truth)
    ts = guided.time_grid(int(cfg.steps))
    results: dict[str, dict[str, Any]] = {}
    ours: dict[str, Callable[[], Any]] = {}
    built = {}  # every method first: a bad setting is refused before anything runs
    for pair, sides in cfg.pairs.items():
        for side in ("ours", "theirs"):
            try:
                built[pair, side] = build_method(
                    cfg.methods[sides[side]], prior, op=op, y=y, sigma_y=sigma_y
                )
            except (ValueError, TypeError) as error:
                raise type(error)(f"method {sides[side]!r} ({pair}): {error}") from error
    bar = progress(2 * len(cfg.pairs), "pairs x sides", "run")
    for pair, sides in cfg.pairs.items():
        row: dict[str, Any] = {}
        for side in ("ours", "theirs"):
            method = built[pair, side]
            gens = generators(int(cfg.seed), rows, 1)
            x_T = guided.initial_noise(prior.schedule, (rows, *prior.shape), gens)
            cost = priors.Cost()

            def run(method: Any = method, x_T: torch.Tensor = x_T, cost: Any = cost) -> Any:
                cost.nfe = cost.vjp = 0.0
                gens = generators(int(cfg.seed), rows, 2)
                return method(x_T, ts, gens, cost)

            x, wall = timed(run, int(cfg.repeats))
            peak = peak_memory(run)[1]
            if side == "ours":
                ours[str(pair)] = run
            row[side] = {
                "method": str(sides[side]),
                "psnr": float(psnr(x.double().clamp(-1, 1), truth.double()).mean()),
                "nfe": cost.nfe,
                "vjp": cost.vjp,
                "wall_s": wall,
                "peak_mib": peak,
            }
            bar.update()
            log.info("%s, %s: PSNR %.2f dB, %.2f s", pair, side, row[side]["psnr"], wall)
            if int(cfg.samples) > 1:
                row[side]["spread"] = spread(cfg, method, prior, truth)
        row["psnr_difference"] = row["ours"]["psnr"] - row["theirs"]["psnr"]
        row["wall_ratio"] = row["ours"]["wall_s"] / row["theirs"]["wall_s"]
        peaks = row["ours"]["peak_mib"], row["theirs"]["peak_mib"]
        row["memory_ratio"] = None if None in peaks or not peaks[1] else peaks[0] / peaks[1]
        results[str(pair)] = row
    bar.close()
    return results, ours


def spread(
    cfg: DictConfig, method: Any, prior: priors.Denoiser, truth: torch.Tensor
) -> dict[str, Any]:
    """``samples`` restorations of the same measurement from different noise (seeds
    ``seed + 1 ... seed + samples``): the mean and per-seed PSNR of single samples, the PSNR
    of their average (a Monte Carlo posterior mean) and the mean per-pixel standard
    deviation across them (how spread the samples are)."""
    rows, ts = truth.shape[0], guided.time_grid(int(cfg.steps))
    xs = []
    for k in range(1, int(cfg.samples) + 1):
        seed = int(cfg.seed) + k
        x_T = guided.initial_noise(prior.schedule, (rows, *prior.shape), generators(seed, rows, 1))
        x = method(x_T, ts, generators(seed, rows, 2), priors.Cost())
        xs.append(x.double().clamp(-1, 1))
    stack, truth = torch.stack(xs), truth.double()
    per_seed = [float(psnr(x, truth).mean()) for x in stack]
    return {
        "samples": len(per_seed),
        "psnr_per_seed": per_seed,
        "psnr_sample": sum(per_seed) / len(per_seed),
        "psnr_of_mean": float(psnr(stack.mean(0), truth).mean()),
        "pixel_std": float(stack.std(0).mean()),
    }


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    _check(cfg)
    torch.set_num_threads(int(cfg.threads))
    prior = priors.load(str(cfg.prior))
    truth = held_out(str(cfg.prior), int(cfg.images)).float()
    results, ours = compare(cfg, prior, truth)
    floor_run = vjp_floor(cfg, prior, truth.shape[0])
    metrics: dict[str, Any] = {
        "prior": str(cfg.prior),
        "task": str(cfg.task),
        "steps": int(cfg.steps),
        "images": int(cfg.images),
        "threads": int(cfg.threads),
        "results": results,
    }
    if "dps" in ours:  # timed in alternation with the floor
        dps_s, metrics["vjp_floor_s"] = timed_pair(ours["dps"], floor_run, int(cfg.repeats))
        metrics["guided_step_over_floor"] = dps_s / metrics["vjp_floor_s"]
    else:
        metrics["vjp_floor_s"] = timed(floor_run, int(cfg.repeats))[1]
    if getattr(prior, "num_classes", 0):
        metrics["cfg"] = cfg_floor(cfg, prior, truth.shape[0])
    write(metrics, out_dir)
    return metrics


def write(metrics: dict[str, Any], out: Path) -> None:
    header = [
        "method", "ours", "deepinv", "psnr_ours", "psnr_deepinv", "psnr_difference", "nfe_ours",
        "nfe_deepinv", "vjp_ours", "vjp_deepinv", "wall_ours_s", "wall_deepinv_s", "wall_ratio",
        "peak_ours_mib", "peak_deepinv_mib", "memory_ratio",
    ]  # fmt: skip
    rows = []
    for name, r in metrics["results"].items():
        ours, theirs = r["ours"], r["theirs"]
        rows.append([
            name, ours["method"], theirs["method"], ours["psnr"], theirs["psnr"],
            r["psnr_difference"], ours["nfe"], theirs["nfe"], ours["vjp"], theirs["vjp"],
            ours["wall_s"], theirs["wall_s"], r["wall_ratio"], ours["peak_mib"],
            theirs["peak_mib"], r["memory_ratio"],
        ])  # fmt: skip
    with (out / "bench.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    lines = [
        (
            f"{metrics['prior']} prior, task {metrics['task']}, {metrics['images']} images, "
            f"{metrics['steps']} steps, {metrics['threads']} CPU threads"
        ),
        "",
        (
            "| method | PSNR ours | PSNR deepinv | difference | NFE ours / deepinv | VJP ours / "
            "deepinv | wall ours (s) | wall deepinv (s) | ours / deepinv | peak MiB ours / "
            "deepinv |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        memory = "n/a" if row[13] is None else f"{row[13]:.1f} / {row[14]:.1f}"
        lines.append(
            f"| {row[0]} | {row[3]:.2f} | {row[4]:.2f} | {row[5]:+.2f} | {row[6]:g} / "
            f"{row[7]:g} | {row[8]:g} / {row[9]:g} | {row[10]:.2f} | {row[11]:.2f} | "
            f"{row[12]:.2f} | {memory} |"
        )
    spreads = [(n, r) for n, r in metrics["results"].items() if "spread" in r["ours"]]
    if spreads:
        lines += [
            "",
            (
                "| method | samples | PSNR of a sample ours / deepinv | PSNR of their mean "
                "ours / deepinv | pixel std ours / deepinv |"
            ),
            "|---|---|---|---|---|",
        ]
        for name, r in spreads:
            a, b = r["ours"]["spread"], r["theirs"]["spread"]
            lines.append(
                f"| {name} | {a['samples']} | {a['psnr_sample']:.2f} / {b['psnr_sample']:.2f} "
                f"| {a['psnr_of_mean']:.2f} / {b['psnr_of_mean']:.2f} | {a['pixel_std']:.4f} "
                f"/ {b['pixel_std']:.4f} |"
            )
    lines += ["", f"Forward + VJP floor for the same steps: {metrics['vjp_floor_s']:.2f} s"]
    if "guided_step_over_floor" in metrics:
        lines.append(f"Our DPS over that floor: {metrics['guided_step_over_floor']:.3f}x")
    if "cfg" in metrics:
        c = metrics["cfg"]
        lines.append(
            f"CFG batched {c['batched_s']:.2f} s vs two passes {c['two_pass_s']:.2f} s: "
            f"{c['ratio']:.2f}x (largest difference {c['max_difference']:.2g})"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    names = [row[0] for row in rows]
    positions = range(len(names))
    for ax, (i, j), label in ((axes[0], (10, 11), "wall time (s)"), (axes[1], (3, 4), "PSNR")):
        ax.bar([p - 0.2 for p in positions], [row[i] for row in rows], 0.4, label="ours")
        ax.bar([p + 0.2 for p in positions], [row[j] for row in rows], 0.4, label="deepinv")
        ax.set_xticks(list(positions), names)
        ax.set_ylabel(label)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=100)
    plt.close(fig)
    write_metrics(metrics, out)  # last: the run's finished mark


@hydra.main(version_base=None, config_path="../configs/bench", config_name="bench")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log)


if __name__ == "__main__":
    launch(main)
