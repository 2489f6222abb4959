r"""Choose each classical baseline's regularisation per task and noise level, on training
photographs.

    python -m experiments.benchmarks.tune_baselines              # writes tuned.yaml
    python -m experiments.benchmarks.tune_baselines install=true # and the catalogue

For every task and :math:`\sigma_y`, ``crops`` crops of each of ``photographs`` *training*
photographs (:mod:`experiments.shared.photographs`, evenly spaced over its list; all of them
when ``null``; the held-out ones are never seen) are measured once,
every combination of each baseline's grid is run on them, and the setting with the best mean
PSNR is kept (a best value at an end of its grid is flagged: widen the grid). Writes
``metrics.json`` (every trial), ``table.md`` and ``tuned.yaml``; with ``install=true`` the
choices replace those for the same baseline, task and noise level in
``configs/catalogue/baselines.yaml`` (which the restore app reads; the others are kept),
with this command in its header.
"""

from __future__ import annotations

import logging

from pathlib import Path
from typing import Any

import hydra
import torch

from omegaconf import DictConfig, OmegaConf

import checks
import operators

from experiments.shared.baselines import BASELINES, NEEDS_PRIOR, applies, run_baseline
from experiments.shared.build import build
from experiments.shared.catalogue import combinations, edges, install, this_command
from experiments.shared.metrics import psnr
from experiments.shared.photographs import Photographs, evenly_spaced, grid_crops
from experiments.shared.report import progress, serve
from experiments.shared.runs import launch, write_metrics
from priors.files import atomic_write_text

log = logging.getLogger(__name__)

CATALOGUE = Path(__file__).resolve().parents[1] / "configs" / "catalogue" / "baselines.yaml"
COMMAND = "python -m experiments.benchmarks.tune_baselines"


def training_crops(crop: int, per_photograph: int, photographs: int | None = None) -> torch.Tensor:
    """``per_photograph`` crops of side ``crop`` of ``photographs`` training photographs
    evenly spaced over the list (all of them when ``None``), each crop evenly spaced over its
    photograph's grid of crops (so the photographs are covered, not only their corners)."""
    where = f" per photograph for crop {crop}"
    images = Photographs("train", crop=crop).images
    if photographs is not None:
        picked = evenly_spaced(torch.arange(len(images)), photographs, "photographs")
        images = [images[int(i)] for i in picked]
    grids = [grid_crops(image, crop) for image in images]
    return torch.cat([evenly_spaced(g, per_photograph, "crops", where) for g in grids]).double()


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    for key in ("crop", "crops", "threads"):
        checks.integer(cfg[key], key, low=1)
    sigmas = [checks.number(s, "sigmas", low=0, open_low=True) for s in cfg.sigmas]
    shared = [b for b in cfg.grids if b in NEEDS_PRIOR]
    if shared:
        raise ValueError(
            f"baselines {shared} are not tuned: they use the settings of "
            f"{[NEEDS_PRIOR[b] for b in shared]} (see experiments.shared.baselines)"
        )
    unknown = [b for b in cfg.grids if b not in BASELINES]
    unknown += [t for t in cfg.tasks if t not in cfg.tasks_available]
    if unknown:
        raise ValueError(
            f"unknown baselines or tasks {unknown}; baselines: {sorted(BASELINES)}, "
            f"tasks: {sorted(cfg.tasks_available)}"
        )
    torch.set_num_threads(int(cfg.threads))
    photographs = cfg.get("photographs")
    if photographs is not None:
        photographs = checks.integer(photographs, "photographs", low=1)
    x = training_crops(int(cfg.crop), int(cfg.crops), photographs)
    raw = {b: OmegaConf.to_container(g) for b, g in cfg.grids.items()}
    grids = {b: combinations(g) for b, g in raw.items()}
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
                        "edge": edges(raw[baseline], settings_list[best]),
                    }
                    log.info("%s, sigma_y %s, %s: %s (%.2f dB)", task, sigma, baseline,
                             settings_list[best], scores[best])  # fmt: skip
    atomic_write_text(out_dir / "tuned.yaml", OmegaConf.to_yaml(OmegaConf.create(tuned)))
    if cfg.install:
        about = [
            "The classical baselines' settings per task and sigma_y, chosen on training",
            f"photographs (crops of {cfg.crop}x{cfg.crop}, never of a held-out one); the restore",
            "app reads them (settings for the nearest tuned sigma_y). Written by these commands",
            "in turn (a later one replaces the settings it tuned, keeps the others):",
        ]
        install(CATALOGUE, tuned, 3, about, this_command(COMMAND))
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
        edge = f" (at its grid's edge: widen {trial['edge']})" if trial.get("edge") else ""
        lines.append(f"| {key} | {trial['best']}{edge} | {scores} |")
    return "\n".join(lines) + "\n"


@hydra.main(
    version_base=None, config_path="../configs/tune_baselines", config_name="tune_baselines"
)
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log, table)


if __name__ == "__main__":
    launch(main)
