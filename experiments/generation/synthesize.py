"""Synthesize a texture larger than the crops the texture prior was trained on.

    python -m experiments.generation.synthesize texture=gravel factor=4

The texture prior is fully convolutional (no attention, no absolute position), so it
samples a whole ``factor`` x 32 square in one go: no tiles, hence no seams. Writes
``texture_<name>.png`` (the synthesized texture beside a real crop of the same size from the
training image) and ``metrics.json``: the clean texture classifier's votes over the 32x32
tiles of the synthesized texture (the share of tiles it assigns to the requested class).
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

import guided
import priors

from experiments.shared.data import TEXTURES, Textures
from experiments.shared.report import markdown_table, serve
from experiments.shared.runs import launch, write_metrics

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)


@torch.no_grad()
def synthesize(texture: str, factor: int, steps: int, scale: float, seed: int) -> torch.Tensor:
    """One texture of side ``factor`` x the training crop, shape (1, 1, H, W)."""
    if texture not in TEXTURES:
        raise ValueError(f"texture must be one of {TEXTURES}, got {texture!r}")
    if int(factor) < 1 or int(steps) < 1:
        raise ValueError("factor and steps must be positive")
    prior = priors.load("textures")
    c, h, w = prior.shape
    generator = torch.Generator().manual_seed(seed)
    x_T = guided.initial_noise(prior.schedule, (1, c, factor * h, factor * w), generator)
    label = torch.tensor([TEXTURES.index(texture)])
    denoiser = guided.ClassifierFree(prior, scale)
    ts = guided.time_grid(steps)
    x = guided.DDIM()(denoiser, x_T, ts, generator=generator, progress=True, label=label)
    return x.clamp(-1, 1)


@torch.no_grad()
def tile_votes(x: torch.Tensor, crop: int = 32) -> dict[str, float]:
    """The share of non-overlapping ``crop`` tiles the clean classifier gives each class."""
    classifier = priors.load_classifier("textures", noisy=False)
    tiles = x.unfold(-2, crop, crop).unfold(-2, crop, crop).reshape(-1, 1, crop, crop)
    votes = classifier(tiles).argmax(1)
    return {name: float((votes == i).float().mean()) for i, name in enumerate(TEXTURES)}


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Synthesizes the configured texture; writes the figure and ``metrics.json``."""
    torch.set_num_threads(int(cfg.threads))
    start = time.perf_counter()
    x = synthesize(
        str(cfg.texture), int(cfg.factor), int(cfg.steps), float(cfg.scale), int(cfg.seed)
    )
    wall = time.perf_counter() - start
    votes = tile_votes(x)
    real = Textures("train").images[TEXTURES.index(str(cfg.texture))]
    size = x.shape[-1]
    reference = real[0, :size, :size]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    axes[0].imshow(x[0, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
    axes[0].set_title(
        f"synthesized {cfg.texture}, {size}x{size} ({cfg.factor}x the training crop)"
    )
    axes[1].imshow(reference.numpy(), cmap="gray", vmin=-1, vmax=1)
    axes[1].set_title(
        f"real {cfg.texture}, {reference.shape[0]}x{reference.shape[1]} (training region)"
    )
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / f"texture_{cfg.texture}.png", dpi=100)
    plt.close(fig)
    metrics = {
        "texture": str(cfg.texture),
        "size": size,
        "tile_votes": votes,
        "requested_class_share": votes[str(cfg.texture)],
        "wall_s": wall,
    }
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


@hydra.main(version_base=None, config_path="../configs/synthesize", config_name="synthesize")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log, lambda m: markdown_table([{"texture": m["texture"]} | m["tile_votes"]]))


if __name__ == "__main__":
    launch(main)
