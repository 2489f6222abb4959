r"""Blind inverse problems with a shipped prior: the operator's parameters are unknown and
estimated by EM.

    python -m experiments.inverse.blind                              # digits, 5x5 Gaussian blur
    python -m experiments.inverse.blind prior=textures kernel.sigma=2 kernel.size=9
    python -m experiments.inverse.blind unknown=gain gain=0.6            # an unknown gain

``unknown`` picks the operator: ``blur`` (:class:`operators.BlindBlur`, a Gaussian kernel of
``kernel.size`` and ``kernel.sigma`` to find, periodic boundaries) or ``gain``
(:class:`operators.ChannelGain`, :math:`y = g x` with the gain ``gain`` to find). Each
held-out image is measured once by the true operator with noise :math:`\sigma_y`. For every
image, ``samples`` posterior samples are drawn by each method, all guided by PiGDM and the
same DDIM grid:

- ``true_operator``: the non-blind posterior under the true operator (the upper reference
  (a));
- ``wrong_operator``: the non-blind posterior under the wrong fixed operator the EM methods
  start from (a Dirac kernel, i.e. no blur, or the gain 1: reference (b));
- ``em``: :class:`guided.DiffusionEM`, ``em.rounds`` M-steps between whole samplings;
- ``em_fast``: :class:`guided.ExpectationMaximization`, an M-step at every network
  evaluation with :math:`t \leq` ``em.start`` (Fast Diffusion EM).

Scores per method, averaged over images: PSNR of the posterior mean (deepinv), the
relative error of the unknowns :math:`\lVert \hat \theta - \theta \rVert / \lVert \theta
\rVert` (the kernel or the gain), the measurement
residual, the cost per sample, and for the EM methods the share of the PSNR gap from (b) to
(a) they close, :math:`(\text{PSNR}_{em} - \text{PSNR}_b) / (\text{PSNR}_a - \text{PSNR}_b)`
(computed from the averages). Writes ``metrics.json``, ``results.csv`` (per image),
``table.md`` and ``blind.png`` (truth, measurement, each method's posterior mean, and for
a blur the kernels).
"""

from __future__ import annotations

import logging
import time

from pathlib import Path
from typing import Any

import hydra
import matplotlib
import torch

from omegaconf import DictConfig
from torch import Tensor

import guided
import operators
import priors

from experiments.shared.data import held_out
from experiments.shared.metrics import psnr
from experiments.shared.report import means_by_method, progress, serve, write_rows
from experiments.shared.runs import launch, write_metrics

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

METHODS = ("true_operator", "wrong_operator", "em", "em_fast")
UNKNOWNS = ("blur", "gain")


def _check(cfg: DictConfig) -> None:
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; available: {list(METHODS)}")
    if cfg.unknown not in UNKNOWNS:
        raise ValueError(f"unknown must be one of {list(UNKNOWNS)}, got {cfg.unknown!r}")
    if not float(cfg.gain) > 0:
        raise ValueError(f"gain must be > 0, got {cfg.gain}")
    if int(cfg.samples) < 1 or int(cfg.steps) < 1:
        raise ValueError("samples and steps must be >= 1")
    if not float(cfg.sigma_y) > 0:
        raise ValueError(f"sigma_y must be > 0 (EM weighs the data by it), got {cfg.sigma_y}")
    size = int(cfg.kernel.size)
    if size < 1 or size % 2 == 0 or not float(cfg.kernel.sigma) > 0:
        raise ValueError(
            f"kernel.size must be odd and kernel.sigma > 0, got {size}, {cfg.kernel.sigma}"
        )
    if int(cfg.em.rounds) < 1 or not 0 < float(cfg.em.start) <= 1:
        raise ValueError("em.rounds must be >= 1 and em.start in (0, 1]")
    if float(cfg.em.penalty) < 0:
        raise ValueError(f"em.penalty must be >= 0, got {cfg.em.penalty}")


def relative_error(estimate: Tensor, truth: Tensor) -> float:
    """The relative error of an estimate of the unknowns, :math:`\\lVert \\hat \\theta -
    \\theta \\rVert / \\lVert \\theta \\rVert`."""
    return float((estimate.double() - truth.double()).norm() / truth.double().norm())


def operator(cfg: DictConfig, shape: tuple[int, ...], true: bool) -> operators.UnknownOperator:
    """The true operator or the wrong start of EM (a Dirac kernel, the gain 1)."""
    if cfg.unknown == "gain":
        return operators.ChannelGain(shape, torch.tensor([float(cfg.gain) if true else 1.0]))
    size = int(cfg.kernel.size)
    if not true:
        return operators.BlindBlur(shape, kernel_size=size)
    return operators.BlindBlur(
        shape, kernel=operators.gaussian_kernel(float(cfg.kernel.sigma), size=size)
    )


def unknowns(op: operators.UnknownOperator) -> Tensor:
    """The operator's unknowns as a detached tensor (the kernel :math:`(h, w)`, the gains)."""
    if isinstance(op, operators.BlindBlur):
        return op.kernel.detach()[0].clone()
    return op.gain.detach().clone()


def restore(
    cfg: DictConfig, prior: priors.Denoiser, method: str, y: Tensor, g: int
) -> tuple[Tensor, operators.UnknownOperator, priors.Cost]:
    """One image's posterior samples by ``method`` and the operator it ends with."""
    shape, sigma_y = prior.shape, float(cfg.sigma_y)
    x_T = guided.initial_noise(
        prior.schedule, (int(cfg.samples), *shape), torch.Generator().manual_seed(g)
    )
    ts, sampler, cost = guided.time_grid(int(cfg.steps)), guided.DDIM(), priors.Cost()
    op = operator(cfg, shape, true=method == "true_operator")
    m_step = guided.LeastSquaresMStep(penalty=float(cfg.em.penalty))
    if method == "em":
        em = guided.DiffusionEM(op, y, sigma_y, m_step=m_step, rounds=int(cfg.em.rounds))
        x = em(prior, sampler, x_T, ts, cost=cost)
    elif method == "em_fast":
        term = guided.ExpectationMaximization(
            op, y, sigma_y, m_step=m_step, start=float(cfg.em.start)
        )
        x = sampler(guided.GuidedDenoiser(prior, term), x_T, ts, cost=cost)
    else:
        term = guided.PiGDM(op.known(), y, sigma_y)
        x = sampler(guided.GuidedDenoiser(prior, term), x_T, ts, cost=cost)
    return x.detach(), op, cost


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Runs every method on every image; writes the results and the figure."""
    torch.set_num_threads(int(cfg.threads))
    _check(cfg)
    prior = priors.load(str(cfg.prior))
    truth = held_out(str(cfg.prior), int(cfg.images)).float()
    true = operator(cfg, prior.shape, true=True)
    theta = unknowns(true)
    noise = operators.GaussianNoise(float(cfg.sigma_y))
    rows: list[dict[str, Any]] = []
    means: dict[str, list[Tensor]] = {m: [] for m in cfg.methods}
    kernels: dict[str, list[Tensor]] = {m: [] for m in cfg.methods}
    ys = []
    bar = progress(len(truth) * len(cfg.methods), "images x methods", "run")
    for i, x in enumerate(truth):
        y = noise(true.known()(x[None]), torch.Generator().manual_seed(int(cfg.seed) * 7919 + i))
        ys.append(y)
        for method in cfg.methods:
            start = time.perf_counter()
            samples, estimate, cost = restore(cfg, prior, method, y, int(cfg.seed) * 7919 + i)
            wall = time.perf_counter() - start
            mean, k = samples.mean(0, keepdim=True), unknowns(estimate)
            rows.append(
                {
                    "image": i,
                    "method": method,
                    "psnr": float(psnr(mean, x[None])),
                    "error": relative_error(k, theta),
                    "residual": float((estimate.known()(samples) - y).square().mean().sqrt()),
                    "nfe": cost.nfe,
                    "vjp": cost.vjp,
                    "wall_s": wall,
                }
            )
            means[method].append(mean[0])
            kernels[method].append(k)
            bar.update()
            log.info("image %d: %s, PSNR %.2f dB (%.1f s)", i, method, rows[-1]["psnr"], wall)
    bar.close()
    summary = summarise(rows, list(cfg.methods))
    write(rows, summary, cfg, out_dir)
    figure(
        truth, torch.cat(ys), means, kernels if cfg.unknown == "blur" else {}, theta,
        out_dir / "blind.png",
    )  # fmt: skip
    metrics = {"summary": summary, "rows": rows, "sigma_y": float(cfg.sigma_y)}
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def summarise(rows: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, float]]:
    """Averages per method and, for the EM methods, the share of the gap closed."""
    summary = means_by_method(rows, methods, ("psnr", "error", "residual", "nfe", "vjp", "wall_s"))
    if "true_operator" in summary and "wrong_operator" in summary:
        a, b = summary["true_operator"]["psnr"], summary["wrong_operator"]["psnr"]
        for method in ("em", "em_fast"):
            if method in summary:
                summary[method]["gap_closed"] = (summary[method]["psnr"] - b) / (a - b)
    return summary


def write(
    rows: list[dict[str, Any]], summary: dict[str, dict[str, float]], cfg: DictConfig, out: Path
) -> None:
    write_rows(rows, out / "results.csv")
    unknown = (
        f"Gaussian kernel sigma {cfg.kernel.sigma} size {cfg.kernel.size}"
        if cfg.unknown == "blur"
        else f"gain {cfg.gain}"
    )
    name = "kernel" if cfg.unknown == "blur" else "gain"
    lines = [
        (
            f"Blind {cfg.unknown}, prior {cfg.prior}, {unknown}, sigma_y {cfg.sigma_y}, "
            f"{cfg.images} images x {cfg.samples} samples, DDIM {cfg.steps} steps, PiGDM "
            "E-steps"
        ),
        "",
        f"| method | PSNR (dB) | {name} error | residual | gap closed | NFE | VJP |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        gap = f"{s['gap_closed']:.0%}" if "gap_closed" in s else "-"
        lines.append(
            f"| {method} | {s['psnr']:.2f} | {s['error']:.3f} | {s['residual']:.4f} | "
            f"{gap} | {s['nfe']:.0f} | {s['vjp']:.0f} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")


def figure(
    truth: Tensor,
    y: Tensor,
    means: dict[str, list[Tensor]],
    kernels: dict[str, list[Tensor]],
    kernel: Tensor,
    path: Path,
) -> None:
    """Per image: truth, measurement, each method's posterior mean; then the kernels (when
    ``kernels`` has them)."""
    methods = list(means)
    cols = 2 + len(methods) + (len(kernels) + 1 if kernels else 0)
    fig, axes = plt.subplots(len(truth), cols, figsize=(1.3 * cols, 1.4 * len(truth)))
    axes = axes.reshape(len(truth), cols)
    for i in range(len(truth)):
        panels = [("truth", truth[i]), ("y", y[i])]
        panels += [(m, means[m][i]) for m in methods]
        for j, (title, image) in enumerate(panels):
            axes[i, j].imshow(image[0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[i, j].set_title(title, fontsize=7)
        kernel_panels = [("k true", kernel)] if kernels else []
        kernel_panels += [(f"k {m}", kernels[m][i]) for m in kernels]
        for j, (title, k) in enumerate(kernel_panels, start=len(panels)):
            axes[i, j].imshow(k.numpy(), cmap="magma")
            axes[i, j].set_title(title, fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@hydra.main(version_base=None, config_path="../configs/blind", config_name="blind")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log)


if __name__ == "__main__":
    launch(main)
