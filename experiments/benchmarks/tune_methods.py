r"""Tune the restoration methods per prior and task at one budget or several: ours and
deepinv's loops by the same sweep, on images that are never scored.

    python -m experiments.benchmarks.tune_methods                    # digits, box inpainting
    python -m experiments.benchmarks.tune_methods -m prior=digits,textures \
        task=box,random,sr4,blur install=true                        # every job installs

Each method of ``grids`` (a key of the method catalogue) has a grid written like its node with
lists at the leaves (``grids.dps_taper.guidance.zeta=[100,300,1000]``); every combination of
it (at most ``max_trials``, the same bound for every method, ours and the peer's) restores
``images`` images of the prior's *training* split, or with ``split=validation`` of its held-out
split less the ``scored`` images the bench scores (:func:`experiments.shared.data.tuning`:
the held-out images that the bench and restore apps score are never seen) from one measurement
(``task``, ``sigma_y``) in ``steps`` steps, from each of ``seeds`` noise seeds. ``steps`` may
list several budgets (``'steps=[25,100]'``): each setting then restores at every one of them and
is scored by its mean PSNR over the budgets, each weighing alike, so a setting that is best at
100 steps and fails at 25 (DPS's zeta 500 on digits box inpainting) loses to one that holds at
both; a setting that diverges at any budget scores NaN. Every trial
starts from the same initial noise and draws the same sampler noise (common random numbers),
so settings are compared on the same draws; the setting with the best mean PSNR of a sample
(over the images and the seeds) is kept (a diverged run, whose PSNR is
not finite, never is), and a value chosen at an end of its grid is flagged (widen the grid). A
method that does not take the task's operator (DDRM without an SVD) is skipped and says so.

Writes ``metrics.json`` (every trial: its settings, PSNR, SSIM, NFE and wall time),
``table.md`` and ``tuned.yaml``; with ``install=true`` the choices replace those for the same
method, prior, task and noise level in ``configs/catalogue/tuned.yaml`` (the others are kept,
the file is locked while it is rewritten, so the jobs of a multirun install in turn), with
this command in its header. The bench app restores with them.

The grids are the search, the catalogue's values are only its starting point: tune at one
budget (100 network evaluations by default) or at the budgets a comparison is judged at, and
check at the others with the bench, which is how the step parameterisations are shown to carry
across budgets.
"""

from __future__ import annotations

import logging
import math
import time

from pathlib import Path
from typing import Any

import hydra
import torch

from omegaconf import DictConfig, OmegaConf

import checks
import operators
import priors

from experiments.shared.build import build, build_method, run_seeded
from experiments.shared.catalogue import (
    combinations,
    edges,
    flat_grid,
    install,
    nested,
    this_command,
    with_settings,
)
from experiments.shared.data import tuning
from experiments.shared.metrics import scores
from experiments.shared.report import progress, serve
from experiments.shared.runs import budgets, launch, write_metrics
from priors.files import atomic_write_text

log = logging.getLogger(__name__)

CATALOGUE = Path(__file__).resolve().parents[1] / "configs" / "catalogue" / "tuned.yaml"
COMMAND = "python -m experiments.benchmarks.tune_methods"
ABOUT = [
    "The restoration methods' settings per prior, task and sigma_y, each chosen by the mean",
    "PSNR of a sample on the prior's training images, or with split=validation on held-out",
    "images the apps do not score (never the ones they score), ours and deepinv's by the same",
    "sweep; the bench app restores with them (the settings for the nearest tuned sigma_y).",
    "Written by these commands in turn (a later one replaces the settings it tuned, keeps the",
    "others):",
]


def grids(cfg: DictConfig) -> dict[str, tuple[dict[str, list[Any]], list[dict[str, Any]]]]:
    """Each method's grid as ``{dotted.path: [values]}`` with its combinations, checked against
    the catalogue (a method or a setting it does not have, a grid over ``max_trials``) before
    anything runs."""
    limit = checks.integer(cfg.max_trials, "max_trials", low=1)
    out = {}
    for name, grid in cfg.grids.items():
        if name not in cfg.methods:
            raise ValueError(f"grids names unknown method {name!r}; methods: {list(cfg.methods)}")
        flat = flat_grid(OmegaConf.to_container(grid), f"grids.{name}")
        with_settings(cfg.methods[name], nested({k: v[0] for k, v in flat.items()}), name)
        settings_list = combinations(flat)
        if len(settings_list) > limit:
            raise ValueError(
                f"grids.{name} has {len(settings_list)} combinations, more than "
                f"max_trials={limit}: every method gets the same bound (shorten a list)"
            )
        out[str(name)] = flat, settings_list
    if not out:
        raise ValueError("grids names no method to tune")
    return out


def _check(cfg: DictConfig) -> None:
    for key in ("images", "threads", "seeds", "scored"):
        checks.integer(cfg[key], key, low=1)
    budgets(cfg.steps)
    checks.number(cfg.sigma_y, "sigma_y", low=0)
    if cfg.task not in cfg.tasks_available:
        raise ValueError(f"unknown task {cfg.task!r}; available: {list(cfg.tasks_available)}")


def trial(
    method: Any, prior: priors.Denoiser, truth: torch.Tensor, steps: int, seed: int, seeds: int = 1
) -> dict[str, Any]:
    """Restorations of ``truth``'s measurement by ``method`` (built) from the noise seeds
    ``seed, ..., seed + seeds - 1`` (initial and sampler noise; the measurement is the same):
    the PSNR and SSIM of a sample (clamped to the data range) averaged over the seeds, with
    the PSNR of each seed when there are several, network evaluations and VJPs per sample,
    wall time of all. A run that diverged (raised FloatingPointError, or returned NaN or
    infinity) on any seed scores NaN and says why under ``diverged``: a mean over the seeds
    that finished would flatter the setting."""
    ts = method.times(steps)
    each: list[tuple[float, float]] = []
    start = time.perf_counter()
    for k in range(seeds):
        cost = priors.Cost()
        x, reason = run_seeded(method, tuple(truth.shape), ts, seed + k, cost)
        if x is None:
            why = reason if seeds == 1 else f"seed {seed + k}: {reason}"
            return {"psnr": math.nan, "ssim": math.nan, "nfe": cost.nfe, "vjp": cost.vjp,
                    "wall_s": time.perf_counter() - start, "diverged": why}  # fmt: skip
        each.append(scores(x, truth))
    score: dict[str, Any] = {
        "psnr": sum(p for p, _ in each) / seeds,
        "ssim": sum(s for _, s in each) / seeds,
        "nfe": cost.nfe,
        "vjp": cost.vjp,
        "wall_s": time.perf_counter() - start,
    }
    if seeds > 1:
        score["psnr_per_seed"] = [p for p, _ in each]
    return score


def over_budgets(
    method: Any,
    prior: priors.Denoiser,
    truth: torch.Tensor,
    steps_list: list[int],
    seed: int,
    seeds: int = 1,
) -> dict[str, Any]:
    """:func:`trial` at each budget of ``steps_list`` (increasing), from the same seeds. One
    budget: its trial. Several: the PSNR and SSIM are the means over the budgets (each weighs
    alike), ``psnr_per_budget`` holds each budget's PSNR, and the network evaluations, VJPs and
    wall time are the trial's totals over the budgets; a divergence at any budget scores NaN,
    says at which budget, and the larger budgets are not run."""
    if len(steps_list) == 1:
        return trial(method, prior, truth, steps_list[0], seed, seeds)
    each: dict[int, dict[str, Any]] = {}
    diverged = None
    for steps in steps_list:
        each[steps] = trial(method, prior, truth, steps, seed, seeds)
        if not math.isfinite(each[steps]["psnr"]):
            diverged = f"{steps} steps: {each[steps].get('diverged', 'PSNR not finite')}"
            break
    runs = list(each.values())
    score: dict[str, Any] = {
        "psnr": sum(t["psnr"] for t in runs) / len(runs),
        "ssim": sum(t["ssim"] for t in runs) / len(runs),
        "nfe": sum(t["nfe"] for t in runs),
        "vjp": sum(t["vjp"] for t in runs),
        "wall_s": sum(t["wall_s"] for t in runs),
        "psnr_per_budget": {str(steps): t["psnr"] for steps, t in each.items()},
    }
    if diverged is not None:
        score |= {"psnr": math.nan, "ssim": math.nan, "diverged": diverged}
    return score


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    _check(cfg)
    searched = grids(cfg)
    prior_name, task = str(cfg.prior), str(cfg.task)
    truth = tuning(prior_name, int(cfg.images), str(cfg.split), int(cfg.scored))  # checks split
    torch.set_num_threads(int(cfg.threads))
    sigma_y, seed, seeds = float(cfg.sigma_y), int(cfg.seed), int(cfg.seeds)
    steps = budgets(cfg.steps)
    prior = priors.load(prior_name)
    op = build(cfg.tasks_available[task], in_shape=tuple(truth.shape[1:]))
    g = torch.Generator().manual_seed(seed)
    clean = op(truth.float())
    y = operators.GaussianNoise(sigma_y)(clean, g) if sigma_y > 0 else clean
    level = str(sigma_y)
    trials: dict[str, Any] = {}
    tuned: dict[str, Any] = {}
    total = sum(len(settings_list) for _, settings_list in searched.values())
    with progress(total, f"tune {prior_name} {task}", "trial") as bar:
        for name, (flat, settings_list) in searched.items():
            runs: list[dict[str, float]] = []
            for settings in settings_list:
                bar.set_postfix_str(f"{name} {settings}")
                node = with_settings(cfg.methods[name], nested(settings), name)
                try:
                    method = build_method(node, prior, op=op, y=y, sigma_y=sigma_y)
                except operators.UnsupportedOperator as error:
                    log.info("%s skipped on %s: %s", name, task, error)
                    trials[name] = {"skipped": str(error)}
                    bar.update(len(settings_list))
                    break
                runs.append(over_budgets(method, prior, truth, steps, seed, seeds))
                bar.update()
            if not runs:
                continue
            finite = [s["psnr"] if math.isfinite(s["psnr"]) else -math.inf for s in runs]
            if max(finite) == -math.inf:  # a diverged run scores NaN: never "best"
                trials[name] = {"skipped": "every setting diverged (no finite PSNR)"}
                log.warning("%s on %s %s: every setting diverged", name, prior_name, task)
                continue
            best = max(range(len(runs)), key=finite.__getitem__)
            chosen = settings_list[best]
            tuned[name] = {prior_name: {task: {level: nested(chosen)}}}
            trials[name] = {
                "settings": settings_list,
                "scores": runs,
                "best": chosen,
                "edge": edges(flat, chosen),
            }
            log.info("%s on %s %s: %s (%.2f dB)", name, prior_name, task, chosen,
                     runs[best]["psnr"])  # fmt: skip
    atomic_write_text(out_dir / "tuned.yaml", OmegaConf.to_yaml(OmegaConf.create(tuned)))
    if cfg.install and tuned:
        install(CATALOGUE, tuned, 4, ABOUT, this_command(COMMAND))
        log.info("installed %s", CATALOGUE)
    metrics = {
        "prior": prior_name,
        "task": task,
        "sigma_y": sigma_y,
        "steps": steps,
        "images": int(cfg.images),
        "split": str(cfg.split),
        "seeds": seeds,
        "trials": trials,
        "tuned": tuned,
    }
    atomic_write_text(out_dir / "table.md", table(metrics))
    write_metrics(metrics, out_dir)
    return metrics


def table(metrics: dict[str, Any]) -> str:
    steps = metrics["steps"] if isinstance(metrics["steps"], list) else [metrics["steps"]]
    budget = (
        f"{steps[0]} steps"
        if len(steps) == 1
        else f"{' and '.join(map(str, steps))} steps (PSNR: the mean over the budgets)"
    )
    split = metrics.get("split", "train")  # metrics written before the split was recorded
    images = "training" if split == "train" else split
    lines = [
        (
            f"{metrics['prior']} prior, task {metrics['task']}, sigma_y {metrics['sigma_y']:g}, "
            f"{budget}, {metrics['images']} {images} images, "
            f"{metrics.get('seeds', 1)} noise seed(s)"
        ),
        "",
        "| method | trials | chosen | PSNR | SSIM | NFE / VJP per sample | PSNR of each setting |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, t in metrics["trials"].items():
        if "skipped" in t:
            lines.append(f"| {name} | 0 | skipped: {t['skipped']} | | | | |")
            continue
        best = t["settings"].index(t["best"])
        s = t["scores"][best]
        edge = f" (at its grid's edge: widen {t['edge']})" if t["edge"] else ""
        each = ", ".join(
            f"{_short(settings)}: {score['psnr']:.2f}{_per_budget(score)}"
            for settings, score in zip(t["settings"], t["scores"], strict=True)
        )
        lines.append(
            f"| {name} | {len(t['scores'])} | {_short(t['best'])}{edge} | {s['psnr']:.2f} | "
            f"{s['ssim']:.3f} | {s['nfe']:g} / {s['vjp']:g} | {each} |"
        )
    return "\n".join(lines) + "\n"


def _per_budget(score: dict[str, Any]) -> str:
    """`` (25: 27.10, 100: 29.62)`` for a score over several budgets, nothing for one."""
    per = score.get("psnr_per_budget")
    return f" ({', '.join(f'{s}: {p:.2f}' for s, p in per.items())})" if per else ""


def _short(settings: dict[str, Any]) -> str:
    """``zeta=300`` for ``{"guidance.zeta": 300}``: the last part of each path."""
    return " ".join(f"{path.rsplit('.', 1)[-1]}={value}" for path, value in settings.items())


@hydra.main(version_base=None, config_path="../configs/tune_methods", config_name="tune_methods")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log, table)


if __name__ == "__main__":
    launch(main)
