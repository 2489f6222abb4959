"""The restore app's figure: truth (when there is one), measurement, the baselines, then
each method's posterior mean and standard deviation, one row per image (at most four)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import torch

from torch import Tensor

import operators

from experiments.shared.metrics import to01

matplotlib.use("Agg")

import matplotlib.pyplot as plt

__all__ = ["figure", "show"]


def show(image: Tensor, op: operators.Operator, key: str) -> Tensor:
    """A displayable (C, H, W) in [0, 1]: measurements of another shape are upsampled."""
    if key == "measurement" and tuple(image.shape) != tuple(op.in_shape):
        image = torch.nn.functional.interpolate(
            image[None].float(), size=op.in_shape[-2:], mode="nearest"
        )[0]
    if key.endswith(" std"):
        return (image / max(float(image.max()), 1e-8)).float()
    return to01(image)


def figure(shown: dict[str, Tensor], op: operators.Operator, title: str, path: Path) -> None:
    """Rows: images (at most 4); columns: truth, measurement, pinv, each method's mean/std."""
    rows = min(4, next(iter(shown.values())).shape[0])
    keys = list(shown)
    fig, axes = plt.subplots(
        rows, len(keys), figsize=(1.3 * len(keys), 1.4 * rows + 0.4), squeeze=False
    )
    for c, key in enumerate(keys):
        for r in range(rows):
            ax = axes[r, c]
            image = show(shown[key][r], op, key)
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, c].set_title(key, fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
