"""Score the shipped priors by what they generate.

    python -m experiments.training.evaluate_priors
    python -m experiments.training.evaluate_priors digits.samples=100 steps=25

For each prior, samples of requested classes (classifier-free guidance at the configured
scale, DDIM) are classified by the clean classifier, which never saw generated data; the
class agreement is written to ``metrics.json`` with the held-out accuracy of that
classifier beside it, and ``samples_<prior>.png`` shows a grid of samples per class.
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

from experiments.shared.data import TEXTURES, Digits, Textures
from experiments.shared.report import markdown_table, serve
from experiments.shared.runs import launch, write_metrics

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

CLASS_NAMES = {"digits": [str(i) for i in range(10)], "textures": list(TEXTURES)}


@torch.no_grad()
def generate(
    name: str, samples: int, scale: float, steps: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples`` draws of prior ``name`` with labels cycling over its classes."""
    prior = priors.load(name)
    label = torch.arange(samples) % prior.num_classes
    denoiser = guided.ClassifierFree(prior, scale)
    x_T = guided.initial_noise(prior.schedule, (samples, *prior.shape), generator)
    ts = guided.time_grid(steps)
    x = guided.DDIM()(denoiser, x_T, ts, generator=generator, progress=True, label=label)
    return x.clamp(-1, 1), label


@torch.no_grad()
def agreement(name: str, x: torch.Tensor, label: torch.Tensor) -> dict[str, Any]:
    """Agreement of the clean classifier with the requested classes, per class too."""
    classifier = priors.load_classifier(name, noisy=False)
    predicted = torch.cat([classifier(chunk).argmax(1) for chunk in x.split(500)])
    data = Digits("test") if name == "digits" else Textures("test")
    x_test, y_test = data.evaluation()
    accuracy = float((classifier(x_test).argmax(1) == y_test).float().mean())
    per_class = {
        CLASS_NAMES[name][c]: float((predicted[label == c] == c).float().mean())
        for c in range(int(label.max()) + 1)
    }
    return {
        "agreement": float((predicted == label).float().mean()),
        "per_class": per_class,
        "classifier_heldout_accuracy": accuracy,
    }


def figure(
    name: str, x: torch.Tensor, label: torch.Tensor, path: Path, per_class: int = 8
) -> None:
    """A grid: one row per class, ``per_class`` samples each."""
    classes = int(label.max()) + 1
    fig, axes = plt.subplots(classes, per_class, figsize=(per_class, classes), squeeze=False)
    for c in range(classes):
        rows = x[label == c][:per_class]
        for j, ax in enumerate(axes[c]):
            ax.axis("off")
            if j < len(rows):
                ax.imshow(rows[j, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[c, 0].set_title(CLASS_NAMES[name][c], fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Evaluates both shipped priors; writes ``metrics.json`` and one figure per prior."""
    torch.set_num_threads(int(cfg.threads))
    generator = torch.Generator().manual_seed(int(cfg.seed))
    metrics: dict[str, Any] = {}
    for name in ("digits", "textures"):
        node = cfg[name]
        if int(node.samples) < 1 or int(cfg.steps) < 1:
            raise ValueError("samples and steps must be positive")
        start = time.perf_counter()
        log.info("%s: generating %d samples, %d steps", name, node.samples, cfg.steps)
        x, label = generate(name, int(node.samples), float(node.scale), int(cfg.steps), generator)
        metrics[name] = agreement(name, x, label) | {
            "samples": int(node.samples),
            "scale": float(node.scale),
            "steps": int(cfg.steps),
            "wall_s": time.perf_counter() - start,
        }
        figure(name, x, label, out_dir / f"samples_{name}.png")
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


@hydra.main(version_base=None, config_path="../configs/evaluate", config_name="evaluate_priors")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log, lambda m: markdown_table([{"prior": k} | v for k, v in m.items()]))


if __name__ == "__main__":
    launch(main)
