"""Figures of the conditional-guidance app: curves of scores against the scale, and
sample grids per scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from torch import Tensor

matplotlib.use("Agg")

import matplotlib.pyplot as plt

__all__ = ["curves", "samples_figure"]


def curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Agreement and FD against scale per sweep; forbidden rate for safety."""
    sweeps = [
        s
        for s in ("cfg", "classifier", "safety", "sag", "sag_cfg")
        if any(r["sweep"] == s for r in rows)
    ]
    floor = next((r["fd"] for r in rows if r["sweep"] == "data"), None)
    fig, axes = plt.subplots(
        1, max(1, len(sweeps)), figsize=(4 * max(1, len(sweeps)), 3.2), squeeze=False
    )
    for ax, sweep in zip(axes[0], sweeps, strict=False):
        part = [r for r in rows if r["sweep"] == sweep]
        scales = [r["scale"] for r in part]
        fd_key = "fd_allowed" if sweep == "safety" else "fd"
        ax.plot(scales, [r[fd_key] for r in part], "o-", color="C0", label=fd_key)
        if floor is not None:
            ax.axhline(floor, color="C0", ls=":", lw=1, label="data FD")
        ax.set_xlabel("scale")
        ax.set_ylabel("Fréchet distance", color="C0")
        twin = ax.twinx()
        rate_key = {"safety": "forbidden_rate"}.get(sweep, "agreement")
        if rate_key in part[0]:
            twin.plot(scales, [r[rate_key] for r in part], "s-", color="C1", label=rate_key)
            twin.set_ylabel(rate_key, color="C1")
            twin.set_ylim(0, 1.02)
        ax.set_title(sweep)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def samples_figure(grid: dict[float, Tensor], path: Path, title: str) -> None:
    """One row of samples per scale."""
    scales = list(grid)
    cols = max(len(x) for x in grid.values())
    fig, axes = plt.subplots(
        len(scales), cols, figsize=(0.8 * cols, 0.9 * len(scales)), squeeze=False
    )
    for r, scale in enumerate(scales):
        for j, ax in enumerate(axes[r]):
            ax.axis("off")
            if j < len(grid[scale]):
                ax.imshow(grid[scale][j, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[r, 0].set_title(f"{title} {scale:g}", fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
