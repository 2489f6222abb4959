r"""Choose each classical baseline's regularisation per task and noise level, on training
photographs.

    python -m experiments.benchmarks.tune_baselines              # writes tuned.yaml
    python -m experiments.benchmarks.tune_baselines install=true # and the catalogue

For every task and :math:`\sigma_y`, ``crops`` crops of each *training* photograph
(:mod:`experiments.shared.photographs`; the held-out ones are never seen) are measured once,
every combination of each baseline's grid is run on them, and the setting with the best mean
PSNR is kept (a best setting at an end of its grid is flagged: widen the grid). Writes
``metrics.json`` (every trial), ``table.md`` and ``tuned.yaml``; with ``install=true`` the
choices replace ``configs/catalogue/baselines.yaml``, which the restore app reads, with this
command in its header.
"""

from __future__ import annotations

import itertools
import logging

from pathlib import Path
from typing import Any

import hydra
import torch

from omegaconf import DictConfig, OmegaConf

import checks
import operators

from experiments.shared.baselines import BASELINES, applies, run_baseline
from experiments.shared.build import build
from experiments.shared.metrics import psnr
from experiments.shared.photographs import Photographs, evenly_spaced, grid_crops
from experiments.shared.report import progress, serve
from experiments.shared.runs import launch, write_metrics
from priors.files import atomic_write_text

log = logging.getLogger(__name__)

CATALOGUE = Path(__file__).resolve().parents[1] / "configs" / "catalogue" / "baselines.yaml"
COMMAND = "python -m experiments.benchmarks.tune_baselines install=true"


def training_crops(crop: int, per_photograph: int) -> torch.Tensor:
    """``per_photograph`` crops of side ``crop`` of every training photograph, evenly spaced
    over its grid of crops (so every photograph, not only the first few, is tuned on)."""
    where = f" per photograph for crop {crop}"
    grids = [grid_crops(image, crop) for image in Photographs("train", crop=crop).images]
    return torch.cat([evenly_spaced(g, per_photograph, "crops", where) for g in grids]).double()


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a baseline's grid."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def at_edge(best: int, trials: int) -> bool:
    """Whether the best of ``trials`` settings (a grid of three or more) is its first or last:
    the optimum may lie beyond the grid, which should then be widened."""
    return trials >= 3 and best in (0, trials - 1)


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    for key in ("crop", "crops", "threads"):
        checks.integer(cfg[key], key, low=1)
    sigmas = [checks.number(s, "sigmas", low=0, open_low=True) for s in cfg.sigmas]
    unknown = [b for b in cfg.grids if b not in BASELINES]
    unknown += [t for t in cfg.tasks if t not in cfg.tasks_available]
    if unknown:
        raise ValueError(
            f"unknown baselines or tasks {unknown}; baselines: {sorted(BASELINES)}, "
            f"tasks: {sorted(cfg.tasks_available)}"
        )
    torch.set_num_threads(int(cfg.threads))
    x = training_crops(int(cfg.crop), int(cfg.crops))
    grids = {b: combinations(OmegaConf.to_container(g)) for b, g in cfg.grids.items()}
    trials: dict[str, Any] = {}
    tuned: dict[str, dict[str, dict[str, Any]]] = {b: {} for b in grids}
    total = len(cfg.tasks) * len(sigmas) * sum(len(g) for g in grids.values())
    with progress(total, "tune baselines") as bar:
        for salt, task in enumerate(cfg.tasks):
            op = build(cfg.tasks_available[task], in_shape=tuple(x.shape[1:]))
            for sigma in sigmas:
                g = torch.Generator().manual_seed(int(cfg.seed) * 7919 + salt)
                y = operators.GaussianNoise(sigma)(op(x), g)
                for baseline, settings_list in grids.items():
                    if not applies(baseline, op):
                        bar.update(len(settings_list))
                        continue
                    scores = []
                    for settings in settings_list:
                        bar.set_postfix_str(f"{task} {sigma} {baseline} {settings}")
                        restored = run_baseline(baseline, op, y, sigma, settings)
                        scores.append(float(psnr(restored, x).mean()))
                        bar.update()
                    best = max(range(len(scores)), key=scores.__getitem__)
                    tuned[baseline].setdefault(str(task), {})[str(sigma)] = settings_list[best]
                    trials[f"{task}/{sigma}/{baseline}"] = {
                        "settings": settings_list,
                        "psnr": scores,
                        "best": settings_list[best],
                        "edge": at_edge(best, len(settings_list)),
                    }
                    log.info("%s, sigma_y %s, %s: %s (%.2f dB)", task, sigma, baseline,
                             settings_list[best], scores[best])  # fmt: skip
    text = OmegaConf.to_yaml(OmegaConf.create(tuned))
    atomic_write_text(out_dir / "tuned.yaml", text)
    if cfg.install:
        header = (
            "# The classical baselines' settings per task and sigma_y, chosen on training\n"
            f"# photographs ({cfg.crops} crop(s) of {cfg.crop}x{cfg.crop} each) by:\n"
            f"#   {COMMAND}\n"
            "# The restore app reads them (settings for the nearest tuned sigma_y).\n"
        )
        atomic_write_text(CATALOGUE, header + text)
        log.info("installed %s", CATALOGUE)
    metrics = {"trials": trials, "tuned": tuned, "config": OmegaConf.to_container(cfg)}
    (out_dir / "table.md").write_text(table(metrics))
    write_metrics(metrics, out_dir)
    return metrics


def table(metrics: dict[str, Any]) -> str:
    lines = ["| task / sigma_y / baseline | chosen | PSNR of each setting |", "|---|---|---|"]
    for key, trial in metrics["trials"].items():
        scores = ", ".join(
            f"{s}: {p:.2f}" for s, p in zip(trial["settings"], trial["psnr"], strict=True)
        )
        edge = " (grid edge: widen it)" if trial.get("edge") else ""
        lines.append(f"| {key} | {trial['best']}{edge} | {scores} |")
    return "\n".join(lines) + "\n"


@hydra.main(
    version_base=None, config_path="../configs/tune_baselines", config_name="tune_baselines"
)
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log, table)


if __name__ == "__main__":
    launch(main)
