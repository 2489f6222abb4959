r"""Restore images with a prior: prior x operator x method.

    python -m experiments.inverse.restore                       # digits, 5 tasks, 4 methods
    python -m experiments.inverse.restore image=photo.png prior=textures 'tasks=[random]'
    python -m experiments.inverse.restore prior=textures images=6 'run=[pigdm,ddrm]' 'tasks=[blur]'

For each task (an operator built for the prior's image shape) every held-out image is
measured once, :math:`y = A x + \sigma_y \epsilon`, and each method draws ``samples``
posterior samples per image (one generator per row, so a sample never depends on its batch
companions). Scores, per task and method, averaged over images:

- ``psnr`` / ``ssim`` of the posterior mean (the average of the samples), ``psnr_sample`` of
  single samples (deepinv's metrics on :math:`[0, 1]` images);
- ``residual``: the RMS of :math:`A x - y` per measured entry (about :math:`\sigma_y` for a
  sample that explains the data without fitting the noise);
- ``nfe`` / ``vjp`` per sample and ``wall_s`` for the task's whole batch;

and the same for the pseudo-inverse :math:`A^+ y` (``pinv``), the baseline every method
must beat. ``prior`` is a shipped name, one of our weight files, a guided-diffusion
checkpoint or a saved diffusers folder (:func:`priors.from_path`); ``image`` is a file or a
folder of the user's own images (PNG, JPEG, TIFF; their channels must be the prior's), which
replace the held-out ones and whose restorations are also written as PNGs at full size
(``<stem>_<task>_<method>.png`` and ``..._<method>_std.png``). Writes ``metrics.json``,
``table.md`` and one figure per task (``restore_<task>.png``: truth, measurement,
pseudo-inverse, then each method's posterior mean and posterior standard deviation).
"""

from __future__ import annotations

import logging
import time

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

import checks
import guided
import operators
import priors

from experiments.inverse.restore_figures import figure
from experiments.shared.build import Method, build, build_method
from experiments.shared.data import DATA, held_out
from experiments.shared.images import image_files, read_images, write_png
from experiments.shared.metrics import psnr, residual, ssim
from experiments.shared.report import progress, serve
from experiments.shared.runs import launch, write_metrics
from experiments.shared.seeds import generators, method_salt

log = logging.getLogger(__name__)


def scores(
    op: operators.Operator, x: Tensor, y: Tensor, truth: Tensor, samples: int
) -> dict[str, float]:
    """Scores of ``samples`` rows per image (rows grouped by image)."""
    n = truth.shape[0]
    grouped = x.view(n, samples, *x.shape[1:])
    mean = grouped.mean(1)
    singles = psnr(x, truth.repeat_interleave(samples, 0))
    return {
        "psnr": float(psnr(mean, truth).mean()),
        "ssim": float(ssim(mean, truth).mean()),
        "psnr_sample": float(singles.mean()),
        "residual": float(residual(op, x, y.repeat_interleave(samples, 0)).mean()),
    }


# The run.


@dataclass
class Task:
    """One task ready to run: its operator, measurement and built methods (or why not)."""

    name: str
    salt: int
    op: operators.Operator
    y: Tensor
    methods: dict[str, Method | str]  # a method, or the reason it does not apply


def prepare_task(
    cfg: DictConfig, name: str, prior: priors.Denoiser, truth: Tensor, salt: int
) -> Task:
    """Builds one task's operator, measures the images and builds every method: a bad value
    in any method's config is refused here, before anything runs. A method that cannot take
    the operator (``operators.UnsupportedOperator``) is recorded as not applicable."""
    op = build(cfg.tasks_available[name], in_shape=tuple(truth.shape[1:]))
    if not isinstance(op, operators.Operator):
        raise TypeError(f"task {name} built {type(op).__name__}, not an Operator")
    sigma_y, samples = float(cfg.sigma_y), int(cfg.samples)
    g = torch.Generator().manual_seed(int(cfg.seed) * 7919 + salt)
    y = operators.GaussianNoise(sigma_y)(op(truth), g) if sigma_y > 0 else op(truth)
    y_rows = y.repeat_interleave(samples, 0)
    methods: dict[str, Method | str] = {}
    for method_name in cfg.run:
        try:
            methods[str(method_name)] = build_method(
                cfg.methods[method_name], prior, op=op, y=y_rows, sigma_y=sigma_y
            )
        except operators.UnsupportedOperator as error:
            methods[str(method_name)] = str(error)
        except (ValueError, TypeError) as error:  # a bad value or keyword: nothing runs
            raise type(error)(f"method {method_name!r} on task {name!r}: {error}") from error
    return Task(name, salt, op, y, methods)


def run_task(
    cfg: DictConfig, task: Task, prior: priors.Denoiser, truth: Tensor, bar: Any
) -> tuple[dict[str, dict[str, float]], dict[str, Tensor]]:
    """Runs every method of a prepared task, advancing the progress ``bar`` by the steps
    done; returns the scores and the images to show."""
    op, y, name, samples = task.op, task.y, task.name, int(cfg.samples)
    results: dict[str, dict[str, float]] = {}
    shown: dict[str, Tensor] = {"truth": truth, "measurement": y}
    if isinstance(op, operators.LinearOperator):
        x_pinv = op.pinv(y).clamp(-1, 1)
        results["pinv"] = scores(op, x_pinv, y, truth, 1)
        shown["pinv"] = x_pinv
    rows = truth.shape[0] * samples
    for method_name, method in task.methods.items():
        steps = int(cfg.steps)
        bar.set_postfix_str(f"{name}: {method_name}")
        if isinstance(method, str):
            results[method_name] = {"not applicable": method}
            log.info("%s: %s does not apply (%s)", name, method_name, method)
            bar.update(steps)
            continue
        gens = generators(int(cfg.seed), rows, method_salt(task.salt, method_name))
        x_T = guided.initial_noise(prior.schedule, (rows, *truth.shape[1:]), gens)
        cost = priors.Cost()
        start = time.perf_counter()
        end = bar.n + steps  # the bar stops there, however many transitions a sampler makes

        def step(end: int = end) -> None:
            if bar.n < end:
                bar.update()

        try:
            x = method(x_T, guided.time_grid(steps), gens, cost, step).double()
            if not bool(torch.isfinite(x).all()):
                raise FloatingPointError(f"{method_name} on {name} returned NaN or Inf")
        except FloatingPointError as error:  # the NaN guard: reported, the run goes on
            results[method_name] = {"diverged": str(error)}
            log.warning("%s: %s diverged (%s)", name, method_name, error)
            continue
        finally:
            bar.update(max(0, end - bar.n))  # a peer's loop, or a stop, reports none
        x = x.clamp(-1, 1)
        wall = time.perf_counter() - start
        results[method_name] = scores(op, x, y, truth, samples) | {
            "nfe": cost.nfe,
            "vjp": cost.vjp,
            "wall_s": wall,
        }
        log.info(
            "%s: %s, PSNR %.2f dB (%.1f s)", name, method_name, results[method_name]["psnr"], wall
        )
        grouped = x.view(truth.shape[0], samples, *x.shape[1:])
        shown[method_name] = grouped.mean(1)
        shown[method_name + " std"] = grouped.std(1) if samples > 1 else torch.zeros_like(truth)
    return results, shown


def markdown(tasks: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| task | method | PSNR mean | SSIM mean | PSNR sample | residual | NFE | VJP | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, methods in tasks.items():
        for name, r in methods.items():
            refused = next((k for k in ("diverged", "not applicable") if k in r), None)
            if refused:
                lines.append(f"| {task} | {name} | {refused}: {r[refused]} |||||||")
                continue
            cost = (
                f"{r['nfe']:.0f} | {r['vjp']:.0f} | {r['wall_s']:.1f}"
                if "nfe" in r
                else "0 | 0 | -"
            )
            lines.append(
                f"| {task} | {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                f"{r['psnr_sample']:.2f} | {r['residual']:.3f} | {cost} |"
            )
    return "\n".join(lines) + "\n"


def images_and_prior(cfg: DictConfig) -> tuple[priors.Denoiser, Tensor, list[str]]:
    """The prior (``priors.from_path``: a shipped name, a weight file or a checkpoint) and
    the images: the user's (``image``: a file or a folder, with their file stems) or the
    held-out ones of a shipped prior. Channels and size are checked before any work: the
    prior runs once on an image-sized input."""
    prior = priors.from_path(str(cfg.prior))
    if cfg.image is None:
        if str(cfg.prior) not in DATA:
            raise ValueError(
                f"prior {cfg.prior!r} has no held-out images: give image=<file or folder>"
            )
        return prior, held_out(str(cfg.prior), int(cfg.images)), []
    path = Path(str(cfg.image))
    truth = read_images(path)
    stems = [f.stem for f in image_files(path)]
    if truth.shape[1] != prior.shape[0]:
        raise ValueError(
            f"image {path} has {truth.shape[1]} channel(s), the prior {cfg.prior!r} takes "
            f"{prior.shape[0]}: convert the image or choose a prior with its channels"
        )
    try:
        with torch.no_grad():
            prior(torch.zeros(1, *truth.shape[1:]), 0.5)
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"the prior {cfg.prior!r} cannot take images of size {tuple(truth.shape[2:])}: {error}"
        ) from error
    return prior, truth, stems


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Runs every task; writes metrics.json, table.md and the figures (all at the end)."""
    for key in ("images", "samples", "steps", "threads"):
        checks.integer(cfg[key], key, low=1)
    checks.integer(cfg.seed, "seed", low=0)
    checks.number(cfg.sigma_y, "sigma_y", low=0)
    torch.set_num_threads(int(cfg.threads))
    unknown = [m for m in cfg.run if m not in cfg.methods]
    unknown += [t for t in cfg.tasks if t not in cfg.tasks_available]
    if unknown:
        raise ValueError(
            f"unknown methods or tasks {unknown}; methods: {sorted(cfg.methods)}, "
            f"tasks: {sorted(cfg.tasks_available)}"
        )
    prior, truth, names = images_and_prior(cfg)
    tasks: dict[str, dict[str, dict[str, float]]] = {}
    figures: list[tuple[dict[str, Tensor], operators.Operator, str, Path]] = []
    prepared = [
        prepare_task(cfg, str(name), prior, truth, salt) for salt, name in enumerate(cfg.tasks)
    ]
    log.info(
        "restoring %d %s images, %d samples each: %d tasks x %d methods x %d steps",
        truth.shape[0], "given" if names else f"held-out {cfg.prior}", cfg.samples,
        len(prepared), len(cfg.run), cfg.steps,
    )  # fmt: skip
    with progress(len(prepared) * len(cfg.run) * int(cfg.steps), "restore") as bar:
        for task in prepared:
            results, shown = run_task(cfg, task, prior, truth, bar)
            tasks[task.name] = results
            title = f"{cfg.prior}: {task.name}, sigma_y = {cfg.sigma_y}, {cfg.steps} steps"
            figures.append((shown, task.op, title, out_dir / f"restore_{task.name}.png"))
            for i, stem in enumerate(names):  # a user's images: each restoration as a PNG
                for key, image in shown.items():
                    if key not in ("truth", "measurement"):
                        tag = key.replace(" ", "_")
                        write_png(out_dir / f"{stem}_{task.name}_{tag}.png", image[i])
    metrics = {
        "prior": str(cfg.prior),
        "sigma_y": float(cfg.sigma_y),
        "images": int(cfg.images),
        "samples": int(cfg.samples),
        "steps": int(cfg.steps),
        "tasks": tasks,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    for shown, op, title, path in figures:
        figure(shown, op, title, path)
    (out_dir / "table.md").write_text(markdown(tasks))
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


@hydra.main(version_base=None, config_path="../configs/restore", config_name="restore")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log, summary)


def summary(metrics: dict[str, Any]) -> str:
    """The table, and whether every method beats the pseudo-inverse on each task."""
    beaten = {
        task: all(
            r.get("psnr", -1) > res["pinv"]["psnr"]
            for m, r in res.items()
            if m != "pinv" and "not applicable" not in r
        )
        for task, res in metrics["tasks"].items()
        if "pinv" in res
    }
    return markdown(metrics["tasks"]) + f"\nevery method beats the pseudo-inverse: {beaten}\n"


if __name__ == "__main__":
    launch(main)
