r"""Floor plans inferred from observed trajectories through a non-differentiable path planner.

    python -m experiments.inverse.floorplan
    python -m experiments.inverse.floorplan plans=5 'methods=[unguided,surrogate]'

The unknown is a held-out floor plan :math:`x` (:class:`experiments.shared.floorplans.
FloorPlans`, the ``test`` split: 32x32, walls 1, free -1); the measurement is what a walker
shows of it, ``trajectories`` shortest paths between random start-goal pairs of free cells at
least ``min_distance`` apart, planned by A* on the true plan (:class:`operators.PathPlanner`:
:math:`y = A(x)`, :math:`(P, S, S)` rasters, no derivative). The prior is the shipped
floor-plan prior (``prior``). Each method draws ``samples`` plans per observed plan at about
the same number of network evaluations per sample (the config says how):

- ``unguided``: the prior alone (DDIM), the reference every method must beat;
- ``surrogate``: CoGuide's contrastive surrogate likelihood. A critic
  (:class:`priors.ContrastiveLikelihood`) is trained in the run on simulated pairs: a pool of
  ``surrogate.critic.pool`` training plans, ``trajectories`` random pairs planned on each (the
  planner calls counted as training cost), the plan encoder seeing the plan or a denoised
  estimate of it (``surrogate.critic.views`` each, their network evaluations counted as training
  cost), the trajectory encoder the paths' :func:`~experiments.shared.floorplans.
  trajectory_features` (visited cells and ends, whatever the order of the paths). Sampling is
  DDPM guided by :class:`guided.SurrogateLikelihood`: the planner is never called. The run
  writes the critic (``critic.safetensors`` and ``critic.json``); ``surrogate.critic.file``
  reuses it in a later run with the same settings (checked), its training cost still
  reported;
- ``zeroth_order``: DPS's update (:class:`guided.DPSSampler`) with the Gaussian-smoothing
  estimate of the residual's gradient (:class:`guided.ZerothOrder`): the planner runs on
  ``queries`` perturbed estimates per step;
- ``enkg``: :class:`guided.EnKG`, ensemble Kalman guidance with ``particles`` plans per sample;
- ``best_of_n``: ``n`` unguided samples, each re-planned; the one whose paths agree best
  with the observed ones (the mean IoU of each path's cells) is kept. Not the fewest
  differing cells, :math:`\lVert A(x) - y \rVert_1`: a plan that blocks a walk misses only
  the observed path's cells, so that count favours plans that cut the walks (the residual
  the zeroth-order and EnKG updates reduce has the same bias).

Scores per sample, averaged over plans: wall IoU against the true plan over the interior
cells (the outer wall, which every plan has, left out: with it, a plan with no inner wall at
all would score about 0.54 on these plans) and the inferred plan's inner wall cells as a share
of the true plan's (an emptier plan lets more walks through); trajectory
consistency, the pairs re-planned on the inferred plan against the observed paths (the
mean IoU of their cells, and the share reproduced exactly; a pair the inferred plan cannot
connect scores 0); network evaluations and VJPs; planner calls in sampling (per sample)
and in training (the surrogate's pool, once for all plans). Writes ``results.csv``,
``table.md``, ``floorplans.png`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time

from pathlib import Path
from typing import Any

import hydra
import matplotlib
import numpy as np
import torch

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

import guided
import operators
import priors

from experiments.inverse.surrogate import denoised_views, fit_critic
from experiments.shared.floorplans import (
    FloorPlans,
    draw_pairs,
    path_agreement,
    paths_image,
    trajectory_features,
    wall_iou,
)
from experiments.shared.metrics import paired
from experiments.shared.report import means_by_method, progress, serve, write_rows
from experiments.shared.runs import launch, write_metrics
from priors.files import atomic_write_text

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

METHODS = ("unguided", "surrogate", "zeroth_order", "enkg", "best_of_n")
SCORES = ("wall_iou", "wall_share", "path_iou", "exact", "nfe", "vjp", "planner_calls", "wall_s")


def _positive(cfg: DictConfig, keys: list[str], integer: bool) -> None:
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = value[part]
        number = float(value)
        if not (math.isfinite(number) and number > 0) or (integer and number != int(number)):
            kind = "an integer >= 1" if integer else "a finite number > 0"
            raise ValueError(f"{key} must be {kind}, got {value}")


def _check(cfg: DictConfig) -> None:
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown or not cfg.methods:
        raise ValueError(f"methods must be some of {list(METHODS)}, got {list(cfg.methods)}")
    _positive(
        cfg,
        ["plans", "samples", "trajectories", "min_distance", "unguided.steps", "surrogate.steps",
         "surrogate.critic.pool", "surrogate.critic.batch", "surrogate.critic.steps",
         "surrogate.critic.features", "surrogate.critic.width", "zeroth_order.steps",
         "zeroth_order.queries", "enkg.steps", "enkg.updates", "enkg.ode_steps",
         "best_of_n.steps", "best_of_n.n"],
        integer=True,
    )  # fmt: skip
    _positive(
        cfg,
        ["surrogate.critic.lr", "surrogate.scale", "surrogate.critic.view_t", "zeroth_order.zeta",
         "zeroth_order.smoothing", "enkg.scale"],
        integer=False,
    )  # fmt: skip
    if int(cfg.first) < 0:
        raise ValueError(f"first must be >= 0, got {cfg.first}")
    if int(cfg.enkg.particles) < 2 or float(cfg.enkg.particles) != int(cfg.enkg.particles):
        raise ValueError(f"enkg.particles must be an integer >= 2, got {cfg.enkg.particles}")
    critic = cfg.surrogate.critic
    if int(critic.views) < 0 or float(critic.view_t) > 1:
        raise ValueError(
            f"surrogate.critic.views must be >= 0 and surrogate.critic.view_t in (0, 1], got "
            f"{critic.views}, {critic.view_t}"
        )
    if not 2 <= int(critic.batch) <= int(critic.pool):
        raise ValueError(
            f"surrogate.critic.batch must be in [2, surrogate.critic.pool = {critic.pool}], "
            f"got {critic.batch}"
        )
    if not 0 <= int(cfg.figure_plans) <= int(cfg.plans):
        raise ValueError(
            f"figure_plans must be in [0, plans = {cfg.plans}], got {cfg.figure_plans}"
        )
    size = int(cfg.size)
    if not 1 <= int(cfg.min_distance) <= 2 * (size - 3):
        raise ValueError(
            f"min_distance must be in [1, {2 * (size - 3)}] on a {size} x {size} plan, got "
            f"{cfg.min_distance}"
        )


def held_out(cfg: DictConfig) -> Tensor:
    """Plans ``first`` .. ``first + plans - 1`` of the held-out split, :math:`(N, 1, S, S)`."""
    count = int(cfg.first) + int(cfg.plans)
    data = FloorPlans("test", size=int(cfg.size), evaluation_size=count)
    return data.evaluation()[0][int(cfg.first) :]


def simulate(plans: Tensor, count: int, min_distance: int, seed: int) -> tuple[Tensor, Tensor]:
    """Random pairs on each plan (plan ``i``'s from generator ``seed + i``) and their
    planned paths: :math:`(N, P, 2, 2)` and :math:`(N, P, S, S)`."""
    pairs, paths = [], []
    for i, plan in enumerate(plans):
        g = torch.Generator().manual_seed(seed + i)
        pair = draw_pairs(plan, count, g, min_distance)
        pairs.append(pair)
        paths.append(operators.PathPlanner(plan.shape, pair)(plan[None])[0])
    return torch.stack(pairs), torch.stack(paths)


def train_critic(
    cfg: DictConfig, prior: priors.Denoiser
) -> tuple[priors.ContrastiveLikelihood, dict[str, float]]:
    """The surrogate's critic, trained on ``surrogate.critic.pool`` training plans (see the
    module); its cost: planner calls, network evaluations and seconds, for all plans."""
    node, start = cfg.surrogate.critic, time.perf_counter()
    pool = int(node.pool)
    data = FloorPlans("train", size=int(cfg.size))
    plans = data.sample(pool, torch.Generator().manual_seed(int(cfg.seed) + 200))[0]
    count = int(cfg.trajectories)
    seed = int(cfg.seed) * 1_000_003 + 500_000  # a stream apart from the scored plans'
    _, paths = simulate(plans, count, int(cfg.min_distance), seed)
    features = trajectory_features(paths)
    g = torch.Generator().manual_seed(int(cfg.seed) + 201)
    signals = denoised_views(prior, plans, int(node.views), float(node.view_t), g)
    batch = int(node.batch)

    def draw(g: torch.Generator) -> tuple[Tensor, Tensor]:
        rows = torch.randint(0, pool, (batch,), generator=g)
        slot = torch.randint(0, signals.shape[1], (batch,), generator=g)
        return signals[rows, slot], features[rows]

    critic, stats = fit_critic(
        node, tuple(prior.shape), tuple(features.shape[1:]), draw, int(cfg.seed)
    )
    return critic, stats | {
        "planner_calls": float(pool * count),
        "nfe": float(pool * int(node.views)),
        "seconds": time.perf_counter() - start,
    }


def critic_settings(cfg: DictConfig) -> dict[str, Any]:
    """What a trained critic depends on: the prior, the plans, the walks and its training."""
    node = {k: v for k, v in OmegaConf.to_container(cfg.surrogate.critic).items() if k != "file"}
    keys = ("prior", "size", "trajectories", "min_distance", "seed")
    return {**{k: cfg[k] for k in keys}, "critic": node}


def load_critic(cfg: DictConfig) -> tuple[priors.ContrastiveLikelihood, dict[str, float]]:
    """The critic of ``surrogate.critic.file`` (written by an earlier run as
    ``critic.safetensors``, with ``critic.json`` beside it) and its training cost, after
    checking that it was trained for the same settings."""
    path = Path(str(cfg.surrogate.critic.file))
    record = path.with_suffix(".json")
    if not path.is_file() or not record.is_file():
        raise ValueError(
            f"surrogate.critic.file must be a critic.safetensors an earlier run wrote, with its "
            f"critic.json beside it; {path} or {record} is missing"
        )
    stored = json.loads(record.read_text())
    settings = critic_settings(cfg)
    if stored.get("settings") != settings:
        raise ValueError(
            f"surrogate.critic.file {path} was trained for {stored.get('settings')}, this run "
            f"asks for {settings}"
        )
    critic = priors.weights.read(path, kind="contrastive")
    return critic.requires_grad_(False), stored["training"]


def save_critic(
    cfg: DictConfig, critic: priors.ContrastiveLikelihood, training: dict[str, float], out: Path
) -> None:
    """``critic.safetensors`` and ``critic.json`` (its settings and training cost), for
    ``surrogate.critic.file`` in later runs."""
    priors.weights.save(critic, out / "critic.safetensors")
    record = {"settings": critic_settings(cfg), "training": training}
    atomic_write_text(out / "critic.json", json.dumps(record, indent=2))


def infer(
    cfg: DictConfig,
    method: str,
    prior: priors.Denoiser,
    op: operators.PathPlanner,
    y: Tensor,
    seed: int,
    critic: priors.ContrastiveLikelihood | None,
) -> tuple[Tensor, priors.Cost]:
    """``samples`` plans inferred from the paths ``y`` :math:`(P, S, S)` by ``method``."""
    n = int(cfg.samples)
    g = torch.Generator().manual_seed(seed)
    x_T = guided.initial_noise(prior.schedule, (n, *prior.shape), g)
    ys = y[None].expand(n, *y.shape)
    cost = priors.Cost()
    node = cfg[method]
    ts = guided.time_grid(int(node.steps))
    if method == "unguided":
        return guided.DDIM()(prior, x_T, ts, cost=cost), cost
    if method == "surrogate":
        if critic is None:
            raise ValueError("the surrogate method needs its trained critic")
        term = guided.SurrogateLikelihood(critic, trajectory_features(y[None]), float(node.scale))
        sampler = guided.DDPM()
        return sampler(guided.GuidedDenoiser(prior, term), x_T, ts, generator=g, cost=cost), cost
    if method == "zeroth_order":
        sampler = guided.DPSSampler(
            op, ys, float(node.zeta), guided.ZerothOrder, queries=int(node.queries),
            smoothing=float(node.smoothing),
        )  # fmt: skip
        return sampler(prior, x_T, ts, generator=g, cost=cost), cost
    if method == "enkg":
        sampler = guided.EnKG(
            op, ys, particles=int(node.particles), scale=float(node.scale),
            updates=int(node.updates), ode_steps=int(node.ode_steps),
            interval=tuple(float(v) for v in node.interval),
        )  # fmt: skip
        return sampler(prior, x_T, ts, generator=g, cost=cost), cost
    # best of n: n unguided candidates per sample, the one whose paths fit best
    k = int(node.n)
    candidates_T = guided.initial_noise(prior.schedule, (n * k, *prior.shape), g)
    candidates = guided.DDIM()(prior, candidates_T, ts, cost=cost)
    cost.nfe, cost.vjp = cost.nfe * k, cost.vjp * k  # per sample, not per candidate
    agreement, _ = path_agreement(op(candidates), y[None].expand(n * k, *y.shape))
    best = agreement.view(n, k).argmax(1) + torch.arange(n) * k
    return candidates[best], cost


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Infers every held-out plan by every method; writes the results and the figure."""
    torch.set_num_threads(int(cfg.threads))
    _check(cfg)
    prior = priors.from_path(str(cfg.prior))
    size = int(cfg.size)
    if tuple(getattr(prior, "shape", ())) != (1, size, size):
        raise ValueError(
            f"prior must be a floor-plan prior on (1, {size}, {size}), got "
            f"{tuple(getattr(prior, 'shape', ()))}"
        )
    truth = held_out(cfg)
    seed = int(cfg.seed) * 1_000_003 + int(cfg.first)  # plan i's pairs: seed + i
    pairs, observed = simulate(truth, int(cfg.trajectories), int(cfg.min_distance), seed)
    critic, training = None, {}
    reused = "surrogate" in cfg.methods and cfg.surrogate.critic.file is not None
    if reused:
        critic, training = load_critic(cfg)
    elif "surrogate" in cfg.methods:
        critic, training = train_critic(cfg, prior)
        log.info(
            "critic: InfoNCE %.3f (chance %.3f), %d planner calls, %.0f s",
            training["final_loss"], training["chance_loss"], training["planner_calls"],
            training["seconds"],
        )  # fmt: skip
    rows: list[dict[str, Any]] = []
    shown: dict[str, list[tuple[Tensor, Tensor]]] = {m: [] for m in cfg.methods}
    bar = progress(len(truth) * len(cfg.methods), "plans x methods", "run")
    for position, (plan, pair, y) in enumerate(zip(truth, pairs, observed, strict=True)):
        index = int(cfg.first) + position
        op = operators.PathPlanner(plan.shape, pair)
        for method in cfg.methods:
            op.calls = 0
            start = time.perf_counter()
            x, cost = infer(cfg, method, prior, op, y, int(cfg.seed) * 7919 + index, critic)
            wall = time.perf_counter() - start
            calls = op.calls / int(cfg.samples)
            x = x.detach().clamp(-1, 1)
            if not bool(torch.isfinite(x).all()):
                raise FloatingPointError(f"{method} returned NaN or Inf on plan {index}")
            replanned = op(x)
            iou, exact = path_agreement(replanned, y[None].expand(len(x), *y.shape))
            inner, true_inner = x[..., 1:-1, 1:-1], plan[None, :, 1:-1, 1:-1]
            walls = wall_iou(inner, true_inner.expand_as(inner))
            share = (inner > 0).flatten(1).sum(1) / (true_inner > 0).sum().clamp_min(1)
            for k in range(len(x)):
                rows.append(
                    {
                        "plan": index, "sample": k, "method": method,
                        "wall_iou": float(walls[k]), "wall_share": float(share[k]),
                        "path_iou": float(iou[k]),
                        "exact": float(exact[k]), "nfe": cost.nfe, "vjp": cost.vjp,
                        "planner_calls": calls, "wall_s": wall / len(x),
                    }
                )  # fmt: skip
            if position < int(cfg.figure_plans):
                shown[method].append((x[0], replanned[0]))
            bar.update()
            log.info(
                "plan %d: %s, wall IoU %.3f, path IoU %.3f (%.1f s)", index, method,
                float(walls.mean()), float(iou.mean()), wall,
            )  # fmt: skip
    bar.close()
    summary = summarise(rows, list(cfg.methods))
    if critic is not None:
        summary["surrogate"] |= {f"training_{k}": v for k, v in training.items()}
    write(rows, summary, cfg, out_dir)
    if critic is not None and not reused:
        save_critic(cfg, critic, training, out_dir)
    if int(cfg.figure_plans):
        figure(truth, observed, shown, int(cfg.figure_plans), out_dir)
    metrics = {"summary": summary, "rows": rows}
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def summarise(rows: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, float]]:
    """Means per method over plans and samples, with 1.96 standard errors over plans for
    the wall IoU and the path IoU."""
    summary = means_by_method(rows, methods, SCORES)
    for method in methods:
        for key in ("wall_iou", "path_iou"):
            per_plan: dict[int, list[float]] = {}
            for r in rows:
                if r["method"] == method:
                    per_plan.setdefault(r["plan"], []).append(r[key])
            means = torch.tensor(
                [float(np.mean(v)) for v in per_plan.values()], dtype=torch.float64
            )
            summary[method][f"{key}_ci"] = paired(means, torch.zeros_like(means))[1]
    return summary


def write(
    rows: list[dict[str, Any]], summary: dict[str, dict[str, float]], cfg: DictConfig, out: Path
) -> None:
    write_rows(rows, out / "results.csv")
    lines = [
        (
            f"Floor plans from {cfg.trajectories} observed A* paths each, prior {cfg.prior}, "
            f"{cfg.plans} held-out plans (from {cfg.first}) x {cfg.samples} samples; means "
            "+- 1.96 SE over plans; cost per sample"
        ),
        "",
        (
            "| method | inner-wall IoU | inner walls / true | path IoU | paths exact | NFE | VJP "
            "| planner calls | s |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        calls = f"{s['planner_calls']:.0f}"
        if "training_planner_calls" in s:
            calls += (
                f" (+ {s['training_planner_calls']:.0f} and {s['training_nfe']:.0f} NFE in "
                "training, for all plans)"
            )
        lines.append(
            f"| {method} | {s['wall_iou']:.3f} +- {s['wall_iou_ci']:.3f} | {s['wall_share']:.2f} "
            f"| {s['path_iou']:.3f}"
            f" +- {s['path_iou_ci']:.3f} | {s['exact']:.2f} | {s['nfe']:.0f} | {s['vjp']:.0f} "
            f"| {calls} | {s['wall_s']:.2f} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")


def figure(
    truth: Tensor,
    observed: Tensor,
    shown: dict[str, list[tuple[Tensor, Tensor]]],
    count: int,
    out: Path,
) -> None:
    """Rows: plans; columns: the true plan with the observed paths, then each method's
    first sample with the pairs re-planned on it (``shown``: the plan and those paths)."""
    cols = 1 + len(shown)
    fig, axes = plt.subplots(count, cols, figsize=(1.6 * cols, 1.6 * count))
    axes = np.asarray(axes).reshape(count, cols)
    for i in range(count):
        panels = [("truth + observed paths", paths_image(truth[i], observed[i]))]
        panels += [(method, paths_image(*drawn[i])) for method, drawn in shown.items()]
        for ax, (title, image) in zip(axes[i], panels, strict=True):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(title, fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "floorplans.png", dpi=110)
    plt.close(fig)


@hydra.main(version_base=None, config_path="../configs/floorplan", config_name="floorplan")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log)


if __name__ == "__main__":
    launch(main)
