r"""Attention analysis of the digits prior across sampling time.

    python -m experiments.generation.attention
    python -m experiments.generation.attention 'digits=[3,8]' steps=25 times=4

Samples the requested digits (classifier-free guidance, DDIM) while recording every
attention layer's probabilities (:func:`priors.attention.record_attention`; with CFG the maps of
the conditional pass). Layers are grouped by their tag, ``down`` / ``mid`` / ``up``, and
summarised per group and time:

- **self attention**: the saliency map :math:`\sum_q \bar P_{qk}` (how much each pixel is
  attended, the SAG mask statistic) upsampled to the image, and two numbers per query
  averaged over layers, heads and queries: the *attention distance*
  :math:`\sum_k P_{qk} \lVert p_q - p_k \rVert` in image pixels (large: the layer mixes
  distant regions, i.e. layout; small: local detail) and the normalised entropy
  :math:`-\sum_k P_{qk} \log P_{qk} / \log N`;
- **cross attention**: for each class token, the map of how much each pixel attends to it.

Writes ``attention_self.png`` (rows: groups, columns: times, with the current
:math:`\hat x`), ``attention_cross.png`` (rows: group x token), ``attention_stats.png``
(distance and entropy against :math:`t` per group) and ``metrics.json``.
"""

from __future__ import annotations

import logging
import math

from pathlib import Path
from typing import Any

import hydra
import matplotlib
import torch
import torch.nn.functional as F

from omegaconf import DictConfig
from torch import Tensor

import guided
import priors

from experiments.shared.report import markdown_table, serve
from experiments.shared.runs import launch, write_metrics
from priors.attention import attention_layers, record_attention

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

GROUPS = ("down", "mid", "up")


class Recording(priors.Wrapper):
    """Runs a denoiser and keeps the attention maps of the network ``recorded`` (first
    ``rows`` rows) per call."""

    def __init__(self, denoiser: priors.Denoiser, recorded: priors.Denoiser, rows: int) -> None:
        super().__init__(denoiser)
        self.recorded, self.rows = recorded, rows
        self.history: list[tuple[float, Tensor, dict[str, Tensor]]] = []

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        with record_attention(self.recorded) as maps:
            x_hat = self.prior(x_t, t, **cond)
        kept = {name: m[: self.rows].float() for name, m in maps.items()}
        self.history.append((float(t.flatten()[0]), x_hat.detach()[: self.rows], kept))
        return x_hat


def _grid_side(n: int) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"attention over a non-square grid ({n} positions)")
    return side


def self_statistics(probs: Tensor, image_side: int) -> tuple[Tensor, float, float]:
    """Saliency :math:`(B, S, S)` at image size, mean attention distance (image pixels) and
    mean normalised entropy of self-attention probabilities :math:`(B, h, N, N)`."""
    b, _, n, _ = probs.shape
    side = _grid_side(n)
    saliency = probs.mean(1).sum(1).reshape(b, 1, side, side)
    saliency = F.interpolate(saliency, size=(image_side, image_side), mode="nearest")[:, 0]
    coords = torch.stack(
        torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1
    ).reshape(n, 2)
    pixel = image_side / side
    distance = (coords[:, None] - coords[None]).float().norm(dim=-1) * pixel  # (N, N)
    mean_distance = float((probs * distance).sum(-1).mean())
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1) / math.log(n)
    return saliency, mean_distance, float(entropy.mean())


def cross_maps(probs: Tensor, image_side: int) -> Tensor:
    """Per-token pixel maps :math:`(B, T, S, S)` from cross attention :math:`(B, h, N, T)`."""
    b, _, n, tokens = probs.shape
    side = _grid_side(n)
    maps = probs.mean(1).transpose(1, 2).reshape(b, tokens, side, side)
    return F.interpolate(maps, size=(image_side, image_side), mode="nearest")


def analyse(
    history: list[tuple[float, Tensor, dict[str, Tensor]]], times: list[int], image_side: int
) -> dict[str, Any]:
    """Per group and recorded step: mean saliency / cross maps and the statistics."""
    out: dict[str, Any] = {"t": [], "x_hat": [], "self": {}, "cross": {}, "stats": {}}
    for i in times:
        t, x_hat, maps = history[i]
        out["t"].append(t)
        out["x_hat"].append(x_hat)
        for group in GROUPS:
            selfs = [
                m for name, m in maps.items() if name.startswith(group) and name.endswith("self")
            ]
            crosses = [
                m for name, m in maps.items() if name.startswith(group) and name.endswith("cross")
            ]
            if selfs:
                parts = [self_statistics(m, image_side) for m in selfs]
                out["self"].setdefault(group, []).append(
                    torch.stack([p[0] for p in parts]).mean(0)
                )
                stats = out["stats"].setdefault(group, {"distance": [], "entropy": []})
                stats["distance"].append(sum(p[1] for p in parts) / len(parts))
                stats["entropy"].append(sum(p[2] for p in parts) / len(parts))
            if crosses:
                maps_c = torch.stack([cross_maps(m, image_side) for m in crosses]).mean(0)
                out["cross"].setdefault(group, []).append(maps_c)
    return out


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Samples, records and writes the figures and ``metrics.json``."""
    torch.set_num_threads(int(cfg.threads))
    digits = [int(d) for d in cfg.digits]
    if not digits or any(not 0 <= d < 10 for d in digits):
        raise ValueError(f"digits must be classes 0..9, got {digits}")
    steps, times = int(cfg.steps), int(cfg.times)
    if steps < 1 or not 1 <= times <= steps:
        raise ValueError(f"need steps >= 1 and 1 <= times <= steps, got {steps}, {times}")
    prior = priors.load("digits")
    if not attention_layers(prior):
        raise ValueError("the prior has no attention layers to analyse")
    label = torch.tensor(digits)
    g = torch.Generator().manual_seed(int(cfg.seed))
    x_T = guided.initial_noise(prior.schedule, (len(digits), *prior.shape), g)
    recording = Recording(guided.ClassifierFree(prior, float(cfg.scale)), prior, len(digits))
    with torch.no_grad():
        x = guided.DDIM()(recording, x_T, guided.time_grid(steps), progress=True, label=label)
    picks = torch.linspace(0, steps - 1, times).round().long().tolist()
    side = prior.shape[-1]
    result = analyse(recording.history, picks, side)
    self_figure(result, x, out_dir / "attention_self.png")
    cross_figure(result, out_dir / "attention_cross.png")
    stats_figure(result, out_dir / "attention_stats.png")
    metrics = {
        "digits": digits,
        "steps": steps,
        "t": result["t"],
        "self_attention": result["stats"],
        "cross_attention_groups": sorted(result["cross"]),
    }
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def self_figure(result: dict[str, Any], x: Tensor, path: Path) -> None:
    groups = [g for g in GROUPS if g in result["self"]]
    cols = len(result["t"])
    fig, axes = plt.subplots(
        len(groups) + 1,
        cols + 1,
        figsize=(1.6 * (cols + 1), 1.6 * (len(groups) + 1)),
        squeeze=False,
    )
    for j, t in enumerate(result["t"]):
        axes[0, j].imshow(
            result["x_hat"][j][0, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1
        )
        axes[0, j].set_title(f"x_hat, t={t:.2f}", fontsize=7)
        for r, group in enumerate(groups, start=1):
            axes[r, j].imshow(result["self"][group][j][0].numpy(), cmap="magma")
            axes[r, j].set_title(f"{group} self", fontsize=7)
    axes[0, cols].imshow(x[0, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
    axes[0, cols].set_title("sample", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cross_figure(result: dict[str, Any], path: Path) -> None:
    groups = [g for g in GROUPS if g in result["cross"]]
    if not groups:
        return
    tokens = result["cross"][groups[0]][0].shape[1]
    cols = len(result["t"])
    rows = len(groups) * tokens
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.5 * rows), squeeze=False)
    for gi, group in enumerate(groups):
        for k in range(tokens):
            for j, t in enumerate(result["t"]):
                ax = axes[gi * tokens + k, j]
                ax.imshow(result["cross"][group][j][0, k].numpy(), cmap="viridis", vmin=0, vmax=1)
                ax.set_title(f"{group} token {k} t={t:.2f}", fontsize=6)
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def stats_figure(result: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for group, stats in result["stats"].items():
        axes[0].plot(result["t"], stats["distance"], "o-", label=group)
        axes[1].plot(result["t"], stats["entropy"], "o-", label=group)
    axes[0].set_ylabel("self-attention distance (pixels)")
    axes[1].set_ylabel("normalised entropy")
    for ax in axes:
        ax.set_xlabel("t")
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@hydra.main(version_base=None, config_path="../configs/attention", config_name="attention")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log, _rows)


def _rows(metrics: dict[str, Any]) -> str:
    return markdown_table(
        [
            {"group": group, "t": t, "distance": d, "entropy": e}
            for group, s in metrics["self_attention"].items()
            for t, d, e in zip(metrics["t"], s["distance"], s["entropy"], strict=True)
        ]
    )


if __name__ == "__main__":
    launch(main)
