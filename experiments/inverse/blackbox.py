r"""Non-differentiable measurements on the digits prior: derivative-free guidance.

    python -m experiments.inverse.blackbox
    python -m experiments.inverse.blackbox 'tasks=[quantize]' 'methods=[zeroth_order,dps_twin]'

Tasks (operators on 16x16 digits, measured once per held-out image, without added noise):

- ``quantize``: :class:`operators.Quantization` to ``quantize.levels`` levels;
- ``jpeg``: :class:`operators.JPEG` at ``jpeg.quality``;
- ``ink``: a black-box simulator (numpy, :class:`operators.BlackBox`): the number of inked
  pixels (above ``ink.threshold``) in every row and every column, a binary-tomography
  projection with no derivative and no twin.

Methods, each drawing ``samples`` posterior samples per image on the same DDIM grid:

- ``unguided``: the prior alone (the reference every method must beat);
- ``zeroth_order``: DPS's update (:class:`guided.DPSSampler`) with the Gaussian-smoothing
  gradient estimate of :class:`guided.ZerothOrder` in place of autograd;
- ``enkg``: :class:`guided.EnKG` (ensemble Kalman guidance, no derivatives at all);
- ``surrogate``: CoGuide's learned surrogate likelihood. A contrastive critic
  (:class:`priors.ContrastiveLikelihood`) is trained in the run on pairs
  :math:`(x, A(x))` simulated with the black box from ``surrogate.pairs`` samples of the
  prior (drawn once per run, shifted by up to a pixel at every training step), the signal
  encoder seeing either :math:`x` or a denoised estimate of it (``surrogate.views`` per
  sample, as it meets :math:`\hat x(x_t)` while sampling); sampling is guided by
  :class:`guided.SurrogateLikelihood` and never calls the operator;
- ``dps_twin``: DPS (the paper's update, :class:`guided.DPSSampler`) on the straight-through
  twin (:class:`operators.StraightThrough`) where one exists (quantize, jpeg).

Scores per task and method, averaged over rows: the measurement residual
:math:`\lVert A(x) - y \rVert_{RMS}`, the error to the truth (RMSE and PSNR of single
samples), and the cost per sample: network evaluations, VJPs and operator calls (for the
surrogate, the simulations its training used, once per task for all measurements). Writes
``metrics.json``, ``table.md`` and ``blackbox_<task>.png``. A run that fails (an operator
returning NaN, for example) stops before anything is written.
"""

from __future__ import annotations

import logging
import time

from pathlib import Path
from typing import Any

import hydra
import matplotlib
import numpy as np
import torch

from omegaconf import DictConfig
from torch import Tensor

import guided
import operators
import priors

from experiments.inverse.black_boxes import Counted, build_task
from experiments.inverse.surrogate import prior_samples, train_surrogate
from experiments.shared.data import held_out
from experiments.shared.metrics import psnr
from experiments.shared.report import progress, serve
from experiments.shared.runs import launch, write_metrics

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

TASKS = ("quantize", "jpeg", "ink")
METHODS = ("unguided", "zeroth_order", "enkg", "surrogate", "dps_twin")


def _check(cfg: DictConfig) -> None:
    for key, known in (("tasks", TASKS), ("methods", METHODS)):
        unknown = [v for v in cfg[key] if v not in known]
        if unknown:
            raise ValueError(f"unknown {key} {unknown}; available: {list(known)}")
    if int(cfg.samples) < 1 or int(cfg.steps) < 1:
        raise ValueError("samples and steps must be >= 1")
    if int(cfg.enkg.particles) < 2:
        raise ValueError(f"enkg.particles must be >= 2, got {cfg.enkg.particles}")
    node = cfg.surrogate
    if int(node.pairs) < int(node.batch) or int(node.batch) < 2 or int(node.steps) < 1:
        raise ValueError(
            f"surrogate needs steps >= 1 and 2 <= batch <= pairs, got steps {node.steps}, "
            f"batch {node.batch}, pairs {node.pairs}"
        )
    if node.sampler not in ("ddpm", "ddim"):
        raise ValueError(f"surrogate.sampler must be ddpm or ddim, got {node.sampler!r}")
    if int(node.views) < 0 or not 0 < float(node.view_t) <= 1:
        raise ValueError(
            f"surrogate.views must be >= 0 and view_t in (0, 1], got {node.views}, {node.view_t}"
        )


def sample(
    cfg: DictConfig,
    method: str,
    prior: priors.Denoiser,
    op: operators.Operator,
    y: Tensor,
    x_T: Tensor,
    seed: int,
    critic: priors.ContrastiveLikelihood | None = None,
) -> tuple[Tensor | None, priors.Cost]:
    """One method's samples (None where the method does not apply); ``critic`` is the
    trained surrogate of the ``surrogate`` method."""
    ts, cost, g = guided.time_grid(int(cfg.steps)), priors.Cost(), torch.Generator()
    g.manual_seed(seed)
    if method == "unguided":
        return guided.DDIM()(prior, x_T, ts, cost=cost), cost
    if method == "zeroth_order":  # the DPS paper's update with the zeroth-order estimate
        node = cfg.zeroth_order
        sampler = guided.DPSSampler(
            op, y, float(node.zeta), guided.ZerothOrder, queries=int(node.queries),
            smoothing=float(node.smoothing),
        )  # fmt: skip
        return sampler(prior, x_T, ts, generator=g, cost=cost), cost
    if method == "enkg":
        node = cfg.enkg
        sampler = guided.EnKG(
            op, y, particles=int(node.particles), scale=float(node.scale),
            updates=int(node.updates), ode_steps=int(node.ode_steps),
            interval=tuple(float(v) for v in node.interval),
        )  # fmt: skip
        return sampler(prior, x_T, ts, generator=g, cost=cost), cost
    if method == "surrogate":
        if critic is None:
            raise ValueError("the surrogate method needs its trained critic")
        term = guided.SurrogateLikelihood(critic, y, scale=float(cfg.surrogate.scale))
        sampler = guided.DDPM() if cfg.surrogate.sampler == "ddpm" else guided.DDIM()
        return sampler(guided.GuidedDenoiser(prior, term), x_T, ts, generator=g, cost=cost), cost
    if op.in_shape != op.out_shape:  # no straight-through twin
        return None, cost
    twin = operators.StraightThrough(op)
    sampler = guided.DPSSampler(twin, y, zeta=float(cfg.dps_twin.zeta))
    return sampler(prior, x_T, ts, generator=g, cost=cost), cost


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    torch.set_num_threads(int(cfg.threads))
    _check(cfg)
    prior = priors.load("digits")
    truth = held_out("digits", int(cfg.images)).float()
    n = int(cfg.samples)
    rows = truth.repeat_interleave(n, 0)
    results: dict[str, dict[str, dict[str, float]]] = {}
    figures: dict[str, tuple[Tensor, dict[str, Tensor]]] = {}
    signals = prior_samples(cfg, prior) if "surrogate" in cfg.methods else None
    bar = progress(len(cfg.tasks) * len(cfg.methods), "tasks x methods", "run")
    for task in cfg.tasks:
        op = Counted(build_task(task, cfg, prior.shape))
        critic, training = None, {}
        if signals is not None:
            critic, training = train_surrogate(cfg, op.op, signals)
        y = op.op(truth).repeat_interleave(n, 0)
        x_T = guided.initial_noise(
            prior.schedule, rows.shape, torch.Generator().manual_seed(int(cfg.seed))
        )
        results[task], shown = {}, {}
        for method in cfg.methods:
            op.rows = 0
            start = time.perf_counter()
            x, cost = sample(cfg, method, prior, op, y, x_T, int(cfg.seed) + 1, critic)
            wall = time.perf_counter() - start
            bar.update()
            if x is None:
                results[task][method] = {"applicable": False}
                log.info("%s: %s does not apply", task, method)
                continue
            x = x.detach().clamp(-1, 1)
            calls = op.rows / rows.shape[0]
            residual = (op.op(x) - y).flatten(1).square().mean(1).sqrt()
            results[task][method] = {
                "residual": float(residual.mean()),
                "rmse": float((x - rows).flatten(1).square().mean(1).sqrt().mean()),
                "psnr": float(psnr(x, rows).mean()),
                "nfe": cost.nfe,
                "vjp": cost.vjp,
                "operator_calls": calls,
                "wall_s": wall,
            }
            log.info(
                "%s: %s, PSNR %.2f dB (%.1f s)", task, method, results[task][method]["psnr"], wall
            )
            if method == "surrogate":
                results[task][method] |= {f"critic_{k}": v for k, v in training.items()}
            shown[method] = x[::n]
        figures[task] = (op.op(truth), shown)
    bar.close()
    write(results, cfg, out_dir)
    for task, (y, shown) in figures.items():
        figure(truth, y, shown, out_dir / f"blackbox_{task}.png", task)
    metrics = {"results": results, "images": int(cfg.images), "samples": n}
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def write(results: dict[str, dict[str, dict[str, float]]], cfg: DictConfig, out: Path) -> None:
    lines = [
        (
            f"Derivative-free guidance on digits: {cfg.images} images x {cfg.samples} samples, "
            f"DDIM {cfg.steps} steps; residual = RMS of A(x) - y; cost per sample"
        ),
        "",
        "| task | method | residual | RMSE | PSNR | NFE | VJP | operator calls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, methods in results.items():
        for method, r in methods.items():
            if not r.get("applicable", True):
                lines.append(f"| {task} | {method} | n/a (no differentiable twin) ||||||")
                continue
            calls = f"{r['operator_calls']:.0f}"
            if "critic_simulations" in r:
                calls += f" (+ {r['critic_simulations']:.0f} in training, for all y)"
            lines.append(
                f"| {task} | {method} | {r['residual']:.3f} | {r['rmse']:.3f} | "
                f"{r['psnr']:.2f} | {r['nfe']:.0f} | {r['vjp']:.0f} | {calls} |"
            )
    (out / "table.md").write_text("\n".join(lines) + "\n")


def figure(truth: Tensor, y: Tensor, shown: dict[str, Tensor], path: Path, task: str) -> None:
    """Rows: images; columns: truth, the measurement (when it is an image), each method."""
    image_y = y.ndim == truth.ndim
    cols = 1 + int(image_y) + len(shown)
    fig, axes = plt.subplots(len(truth), cols, figsize=(1.3 * cols, 1.3 * len(truth)))
    axes = np.asarray(axes).reshape(len(truth), cols)
    for i in range(len(truth)):
        panels = [("truth", truth[i])] + ([("y", y[i])] if image_y else [])
        panels += [(m, x[i]) for m, x in shown.items()]
        for ax, (title, image) in zip(axes[i], panels, strict=True):
            ax.imshow(image[0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle(task, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@hydra.main(version_base=None, config_path="../configs/blackbox", config_name="blackbox")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log)


if __name__ == "__main__":
    launch(main)
