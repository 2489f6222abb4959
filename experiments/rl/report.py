"""Tables and figures of the RL app, from its metrics alone.

Each guided method's scale means what :attr:`experiments.rl.methods.Method.scale` says, so
the figures put methods with different kinds of scale on different panels (one row per
kind): a CFG weight, a safety weight and a value-guidance β never share an axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from experiments.rl.datasets import UNSAFE_RADIUS
from experiments.rl.methods import METHODS
from priors.files import atomic_write

matplotlib.use("Agg")

import matplotlib.pyplot as plt

__all__ = ["bandit_figures", "bandit_table", "env_figure", "env_table"]


def _by_kind(results: dict[str, Any]) -> dict[str, list[str]]:
    """Guided methods grouped by what their scale is."""
    kinds: dict[str, list[str]] = {}
    for method in results:
        kind = METHODS[method].scale
        if kind is not None:
            kinds.setdefault(kind, []).append(method)
    return kinds


def _latency_lines(metrics: dict[str, Any]) -> list[str]:
    node = metrics["settings"]["latency"]
    lines = [
        "",
        (
            f"Latency: {node['states']} states in one batch, DDPM {node['steps']} steps, "
            f"scale 1, {node['threads']} CPU thread(s), median of {node['repeats']} (ms)"
        ),
        "",
        "| method | ms |",
        "|---|---|",
    ]
    return lines + [f"| {m} | {ms:.1f} |" for m, ms in metrics["latency_ms"].items()]


def _scale(method: str, scale: str) -> str:
    kind = METHODS[method].scale
    return "-" if kind is None else f"{kind} = {scale}"


def env_table(metrics: dict[str, Any]) -> str:
    """The normalised scores per method and scale, mean +- std over seeds, and latency."""
    s = metrics["settings"]
    lines = [
        (
            f"{metrics['dataset']}: normalised score (100 = scripted expert, 0 = random), "
            f"mean +- std over seeds {s['seeds']} of {s['episodes']} gymnasium episodes each; "
            f"DDPM {s['steps']} steps, selection from {s['candidates']} candidates"
        ),
        "",
        "| method | scale | normalised score | return |",
        "|---|---|---|---|",
        f"| data | - | {metrics['data_score']:.1f} | {metrics['data']['behaviour_return']:.1f} |",
    ]
    for method, by_scale in metrics["results"].items():
        for scale, r in by_scale.items():
            lines.append(
                f"| {method} | {_scale(method, scale)} | {r['score']:.1f} +- "
                f"{r['score_std']:.1f} | {r['return']:.1f} |"
            )
    return "\n".join(lines + _latency_lines(metrics)) + "\n"


def bandit_table(metrics: dict[str, Any]) -> str:
    """The exact bandit scores per method and scale, and latency."""
    s = metrics["settings"]
    lines = [
        (
            f"{metrics['dataset']}: {s['samples']} actions, DDPM {s['steps']} steps, selection "
            f"from {s['candidates']} candidates; reward = mean reward of the nearest mode "
            f"(optimum {metrics['data']['optimum']}); OOD = farther than 0.2 from every mode"
        ),
        "",
        "| method | scale | expected reward | best safe mode | OOD | violations | modes |",
        "|---|---|---|---|---|---|---|",
    ]
    d = metrics["data_scores"]
    lines.append(f"| data | - | {d['reward']:.2f} | {d['best_mode']:.2f} | {d['ood']:.3f} | "
                 f"{d['violations']:.3f} | {d['modes']} |")  # fmt: skip
    for method, by_scale in metrics["results"].items():
        for scale, r in by_scale.items():
            lines.append(
                f"| {method} | {_scale(method, scale)} | {r['reward']:.2f} | "
                f"{r['best_mode']:.2f} | {r['ood']:.3f} | {r['violations']:.3f} | {r['modes']} |"
            )
    return "\n".join(lines + _latency_lines(metrics)) + "\n"


def _save(fig: plt.Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def env_figure(metrics: dict[str, Any], path: Path) -> None:
    """Normalised score against the scale, one panel per kind of scale; the methods without
    a scale as dashed lines on every panel."""
    results = metrics["results"]
    kinds = _by_kind(results) or {"(no guided method)": []}
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.2), squeeze=False)
    for ax, (kind, methods) in zip(axes[0], kinds.items(), strict=True):
        for method in methods:
            by_scale = results[method]
            x = [max(float(s), 0.01) for s in by_scale]
            scores = [r["score"] for r in by_scale.values()]
            stds = [r["score_std"] for r in by_scale.values()]
            ax.errorbar(x, scores, yerr=stds, fmt="-o", label=method, capsize=2)
        shades = iter(("k", "0.45", "0.7", "0.85"))
        for method, by_scale in results.items():
            if METHODS[method].scale is None:
                ax.axhline(by_scale["0"]["score"], ls="--", color=next(shades), label=method)
        ax.set_xscale("log")
        ax.set_xlabel(f"{kind} (0 at 0.01)")
        ax.set_ylabel("normalised score")
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def bandit_figures(
    metrics: dict[str, Any], shown: dict[str, np.ndarray], data_actions: np.ndarray, out: Path
) -> None:
    """``scales.png``: reward, OOD rate and violation rate against the scale, one row per
    kind of scale; ``actions.png``: each method's actions over the data's."""
    results = metrics["results"]
    kinds = _by_kind(results) or {"(no guided method)": []}
    titles = ("expected reward", "OOD rate", "violation rate")
    fig, axes = plt.subplots(len(kinds), 3, figsize=(12, 3 * len(kinds)), squeeze=False)
    for row, (kind, methods) in zip(axes, kinds.items(), strict=True):
        for method in methods:
            by_scale = results[method]
            x = [max(float(s), 0.1) for s in by_scale]  # scale 0 drawn at 0.1 on the log axis
            for ax, key in zip(row, ("reward", "ood", "violations"), strict=True):
                ax.plot(x, [r[key] for r in by_scale.values()], "-o", label=method)
        for method, color in (("bc", "k"), ("select", "C3")):
            if method in results:
                row[0].axhline(results[method]["0"]["reward"], ls="--", label=method, color=color)
        row[2].axhline(metrics["data_scores"]["violations"], ls="--", color="0.5", label="data")
        for ax, title in zip(row, titles, strict=True):
            ax.set_xscale("log")
            ax.set_xlabel(f"{kind} (0 at 0.1)")
            ax.set_title(title, fontsize=9)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out / "scales.png")
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 2.6), squeeze=False)
    shown_scale = metrics["settings"]["shown_scale"]
    for ax, (method, actions) in zip(axes[0], shown.items(), strict=True):
        ax.scatter(*data_actions[:2000].T, s=1, color="0.8")
        ax.scatter(*actions.T, s=2, color="C0")
        if metrics["dataset"] == "unsafe_bandit":
            ax.add_patch(plt.Circle((0, 0), UNSAFE_RADIUS, color="C3", alpha=0.2))
        kind = METHODS[method].scale
        ax.set_title(method + ("" if kind is None else f" ({kind} {shown_scale:g})"), fontsize=8)
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
        ax.set_aspect("equal")
    fig.tight_layout()
    _save(fig, out / "actions.png")
