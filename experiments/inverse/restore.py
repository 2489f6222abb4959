r"""Restore images with a prior: prior x operator x method.

    python -m experiments.inverse.restore                       # 3 photographs, 4 tasks
    python -m experiments.inverse.restore image=photo.png prior=textures 'tasks=[random]'
    python -m experiments.inverse.restore prior=textures images=6 'run=[pigdm,ddrm]' 'tasks=[blur]'
    python -m experiments.inverse.restore prior=natural measurement=small.png scale=4
    python -m experiments.inverse.restore prior=natural measurement=photo.png mask=mask.png

Two protocols. **Clean images** (the held-out ones, or yours with ``image=``): for each task
(an operator built for the prior's image shape) every held-out image is measured once,
:math:`y = A x + \sigma_y \epsilon`, and each method draws ``samples`` posterior samples per
image (one generator per row, so a sample never depends on its batch companions). **A
measurement** (``measurement=``, a degraded image you already have, with ``scale=``,
``mask=`` or ``kernel=`` saying how it was degraded; :mod:`experiments.inverse.measured`):
no ground truth, so only the residual is scored, and ``sigma_y`` is estimated when not
given.

Scores, per task and method, averaged over images:

- ``psnr`` / ``ssim`` of the posterior mean (the average of the samples), ``psnr_sample`` /
  ``ssim_sample`` of single samples (deepinv's metrics on :math:`[0, 1]` images), and
  ``lpips`` / ``lpips_sample`` when ``lpips=`` names a local AlexNet backbone file
  (:class:`experiments.shared.metrics.LPIPS`: its weights cannot be fetched here);
- ``cover50`` / ``cover90`` (with ``samples`` > 1): the share of the truth's pixels inside
  the samples' central 50% and 90% intervals, per pixel (:func:`evaluation.interval_coverage`).
  Were the truth a draw from the method's posterior, the share would be about
  :math:`(n - 1) \ell / (n + 1)` for :math:`n` samples: 0.44 and 0.79 at 16 samples (0.5
  and 0.9 as :math:`n` grows); well below, the method is sharper than its errors
  (overconfident);
- ``residual``: the RMS of :math:`A x - y` per measured entry (about :math:`\sigma_y` for a
  sample that explains the data without fitting the noise);
- ``nfe`` / ``vjp`` per sample and ``wall_s`` for the task's whole batch;

and the same for the pseudo-inverse :math:`A^+ y` (``pinv``), the baseline every method must
beat, and for the classical ``baselines`` listed (:mod:`experiments.shared.baselines`:
bicubic / linear interpolation, TV, PnP-BM3D, the patch GMM; and ``pnp_prior``, PnP-BM3D's
loop with this prior's one-step denoiser in place of BM3D) with the settings tuned on
training photographs (``configs/catalogue/baselines.yaml``). The methods run with the
settings :mod:`experiments.benchmarks.tune_methods` chose for the shipped prior and task
(``settings=tuned``, the default; ``configs/catalogue/tuned.yaml``; recorded under ``tuned``),
the catalogue's where none were tuned or with ``settings=catalogue``. ``prior`` is a shipped name,
one of our weight files, a guided-diffusion checkpoint or a saved diffusers folder
(:func:`priors.from_path`); ``image`` is a file or a folder of the user's own images (PNG,
JPEG, TIFF; their channels must be the prior's), which replace the held-out ones and whose
restorations are also written as PNGs at full size (``<stem>_<task>_<method>.png`` and
``..._<method>_std.png``). Writes ``metrics.json``, ``table.md`` and one figure per task
(``restore_<task>.png``: truth, measurement, the baselines, then each method's posterior
mean and posterior standard deviation). The prior runs through :class:`priors.Tiled`, so a
fully convolutional prior takes images of any size (tiles of side ``tile`` beyond it).
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
import operators
import priors

from evaluation import interval_coverage
from experiments.inverse.measured import read_measurement
from experiments.inverse.restore_figures import figure
from experiments.shared.baselines import BASELINES, applies, run_baseline, settings_for
from experiments.shared.build import Method, build, build_method, space_mismatch
from experiments.shared.catalogue import tuned_method, tuned_settings
from experiments.shared.data import DATA, held_out
from experiments.shared.images import image_files, read_images, write_png
from experiments.shared.metrics import LPIPS, psnr, residual, ssim
from experiments.shared.report import progress, serve
from experiments.shared.runs import launch, write_metrics
from experiments.shared.seeds import generators, method_salt

log = logging.getLogger(__name__)


def scores(
    op: operators.Operator,
    x: Tensor,
    y: Tensor,
    truth: Tensor | None,
    samples: int,
    lpips: LPIPS | None = None,
) -> dict[str, float]:
    """Scores of ``samples`` rows per image (rows grouped by image); only the measurement
    residual when there is no ground truth; LPIPS too when its metric is given."""
    fit = {"residual": float(residual(op, x, y.repeat_interleave(samples, 0)).mean())}
    if truth is None:
        return fit
    n = truth.shape[0]
    grouped = x.view(n, samples, *x.shape[1:])
    mean = grouped.mean(1)
    rows = truth.repeat_interleave(samples, 0)
    found = {
        "psnr": float(psnr(mean, truth).mean()),
        "ssim": float(ssim(mean, truth).mean()),
        "psnr_sample": float(psnr(x, rows).mean()),
        "ssim_sample": float(ssim(x, rows).mean()),
    }
    if lpips is not None:
        found["lpips"] = float(lpips(mean, truth).mean())
        found["lpips_sample"] = float(lpips(x, rows).mean())
    if samples > 1:  # calibration: the truth's pixels inside the samples' central intervals
        for level in (50, 90):
            covered = [
                interval_coverage(g, t, level / 100).mean()
                for g, t in zip(grouped, truth, strict=True)
            ]
            found[f"cover{level}"] = float(torch.stack(covered).mean())
    return found | fit


# The run.


@dataclass
class Task:
    """One task ready to run: its operator, measurement and built methods (or why not)."""

    name: str
    salt: int
    op: operators.Operator
    y: Tensor
    methods: dict[str, Method | str]  # a method, or the reason it does not apply
    baselines: dict[str, dict[str, Any]]  # the baselines that apply, with their settings
    tuned: dict[str, dict[str, Any] | None]  # each method's tuned settings (None: the catalogue's)


def measure(
    cfg: DictConfig, name: str, truth: Tensor, sigma_y: float, salt: int
) -> tuple[operators.Operator, Tensor]:
    r"""The clean-image protocol: task ``name``'s operator for the images' shape and the
    measurement :math:`y = A x + \sigma_y \epsilon` (one generator per task)."""
    op = build(cfg.tasks_available[name], in_shape=tuple(truth.shape[1:]))
    if not isinstance(op, operators.Operator):
        raise TypeError(f"task {name} built {type(op).__name__}, not an Operator")
    g = torch.Generator().manual_seed(int(cfg.seed) * 7919 + salt)
    y = operators.GaussianNoise(sigma_y)(op(truth), g) if sigma_y > 0 else op(truth)
    return op, y


def prepare_task(
    cfg: DictConfig,
    name: str,
    prior: priors.Denoiser,
    op: operators.Operator,
    y: Tensor,
    sigma_y: float,
    salt: int,
) -> Task:
    """Builds every method and baseline of one task: a bad value in any method's config, or
    a baseline without tuned settings, is refused here, before anything runs. A method that
    cannot take the operator (``operators.UnsupportedOperator``) is recorded as not
    applicable. With ``settings=tuned`` a method runs with the settings
    :mod:`experiments.benchmarks.tune_methods` chose for this shipped prior and task (at the
    tuned noise level nearest to ``sigma_y``), where it tuned any."""
    samples = int(cfg.samples)
    y_rows = y.repeat_interleave(samples, 0)
    methods: dict[str, Method | str] = {}
    chosen: dict[str, dict[str, Any] | None] = {}
    tuned = tuned_settings(cfg)
    for method_name in cfg.run:
        node, chosen[str(method_name)] = tuned_method(
            cfg.methods, tuned, str(method_name), str(cfg.prior), name, sigma_y
        )
        try:
            built = build_method(node, prior, op=op, y=y_rows, sigma_y=sigma_y)
            methods[str(method_name)] = space_mismatch(built, prior) or built
        except operators.UnsupportedOperator as error:
            methods[str(method_name)] = str(error)
        except (ValueError, TypeError) as error:  # a bad value or keyword: nothing runs
            raise type(error)(f"method {method_name!r} on task {name!r}: {error}") from error
    catalogue = OmegaConf.to_container(cfg.baseline_settings)
    baselines = {
        b: settings_for(catalogue, b, name, sigma_y)
        for b in ["pinv", *(b for b in cfg.baselines if b != "pinv")]
        if applies(b, op)
    }
    return Task(name, salt, op, y, methods, baselines, chosen)


def run_task(
    cfg: DictConfig,
    task: Task,
    prior: priors.Denoiser,
    truth: Tensor | None,
    sigma_y: float,
    bar: Any,
    lpips: LPIPS | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, Tensor]]:
    """Runs every method of a prepared task, advancing the progress ``bar`` by the steps
    done; returns the scores (with LPIPS when its metric is given) and the images to show
    (no ``truth`` for a measurement)."""
    op, y, name, samples = task.op, task.y, task.name, int(cfg.samples)
    results: dict[str, dict[str, float]] = {}
    shown: dict[str, Tensor] = {} if truth is None else {"truth": truth}
    shown["measurement"] = y
    for baseline, settings in task.baselines.items():
        bar.set_postfix_str(f"{name}: {baseline}")
        start, cost = time.perf_counter(), priors.Cost()
        with priors.measure(cost, y.shape[0]):  # pnp_prior evaluates the prior
            restored = run_baseline(baseline, op, y, sigma_y, settings, prior)
        results[baseline] = scores(op, restored, y, truth, 1, lpips) | {
            "nfe": cost.nfe,
            "vjp": cost.vjp,
            "wall_s": time.perf_counter() - start,
            "settings": settings,
        }
        shown[baseline] = restored
    rows = y.shape[0] * samples
    for method_name, method in task.methods.items():
        steps = int(cfg.steps)
        bar.set_postfix_str(f"{name}: {method_name}")
        if isinstance(method, str):
            results[method_name] = {"not applicable": method}
            log.info("%s: %s does not apply (%s)", name, method_name, method)
            bar.update(steps)
            continue
        gens = generators(int(cfg.seed), rows, method_salt(task.salt, method_name))
        ts = method.times(steps)
        x_T = method.initial_noise((rows, *op.in_shape), gens, ts)
        cost = priors.Cost()
        start = time.perf_counter()
        end = bar.n + steps  # the bar stops there, however many transitions a sampler makes

        def step(end: int = end) -> None:
            if bar.n < end:
                bar.update()

        try:
            x = method(x_T, ts, gens, cost, step).double()
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
        results[method_name] = scores(op, x, y, truth, samples, lpips) | {
            "nfe": cost.nfe,
            "vjp": cost.vjp,
            "wall_s": wall,
            "tuned": task.tuned[method_name],
        }
        if method.latent is not None:  # the autoencoder's calls, per sample
            results[method_name] |= {
                "decoder": cost.decoder,
                "decoder_vjp": cost.decoder_vjp,
                "encoder": cost.encoder,
                "encoder_vjp": cost.encoder_vjp,
            }
        log.info("%s: %s, %s (%.1f s)", name, method_name, _headline(results[method_name]), wall)
        grouped = x.view(y.shape[0], samples, *x.shape[1:])
        shown[method_name] = grouped.mean(1)
        shown[method_name + " std"] = (
            grouped.std(1) if samples > 1 else torch.zeros_like(x[::samples])
        )
    return results, shown


def _headline(r: dict[str, Any]) -> str:
    return f"PSNR {r['psnr']:.2f} dB" if "psnr" in r else f"residual {r['residual']:.4f}"


def markdown(tasks: dict[str, dict[str, dict[str, float]]]) -> str:
    perceptual = any("lpips" in r for methods in tasks.values() for r in methods.values())
    extra = ("LPIPS mean | LPIPS sample | ", "---|---|") if perceptual else ("", "")
    calibrated = any("cover50" in r for methods in tasks.values() for r in methods.values())
    if calibrated:
        extra = (extra[0] + "cover 50% / 90% | ", extra[1] + "---|")
    latent = any("decoder" in r for methods in tasks.values() for r in methods.values())
    coder = (" decoder + VJP |", "---|") if latent else ("", "")
    lines = [
        (
            "| task | method | PSNR mean | SSIM mean | PSNR sample | SSIM sample | "
            f"{extra[0]}residual | NFE | VJP | wall s |{coder[0]}"
        ),
        f"|---|---|---|---|---|---|{extra[1]}---|---|---|---|{coder[1]}",
    ]
    for task, methods in tasks.items():
        for name, r in methods.items():
            refused = next((k for k in ("diverged", "not applicable") if k in r), None)
            if refused:
                gaps = "|" * (8 + 2 * perceptual + calibrated + latent)
                lines.append(f"| {task} | {name} | {refused}: {r[refused]} {gaps}")
                continue
            cost = f"{r['nfe']:.0f} | {r['vjp']:.0f} | {r['wall_s']:.1f}"
            truth = (
                f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['psnr_sample']:.2f} | "
                f"{r['ssim_sample']:.3f}"
                if "psnr" in r
                else "- | - | - | -"
            )
            if perceptual:
                truth += (
                    f" | {r['lpips']:.3f} | {r['lpips_sample']:.3f}"
                    if "lpips" in r
                    else " | - | -"
                )
            if calibrated:
                truth += (
                    f" | {r['cover50']:.2f} / {r['cover90']:.2f}" if "cover50" in r else " | -"
                )
            if latent:
                cost += (
                    f" | {r['decoder']:.0f} + {r['decoder_vjp']:.0f}" if "decoder" in r else " | -"
                )
            lines.append(f"| {task} | {name} | {truth} | {r['residual']:.3f} | {cost} |")
    return "\n".join(lines) + "\n"


def check_size(prior: priors.Denoiser, shape: tuple[int, ...], what: str) -> None:
    """Refuses, before any work, images whose channels or size the prior cannot take (it
    runs once on an image-sized input); a latent prior takes its autoencoder's image shape."""
    latent = priors.latent_of(prior)
    if latent is not None:
        if tuple(shape) != latent.pixel_shape:
            raise ValueError(
                f"{what} has shape {tuple(shape)}, the latent prior's autoencoder takes images "
                f"of shape {latent.pixel_shape}: crop or resize the image to it"
            )
        return
    if shape[0] != prior.shape[0]:
        raise ValueError(
            f"{what} has {shape[0]} channel(s), the prior takes {prior.shape[0]}: convert "
            "the image or choose a prior with its channels"
        )
    try:
        with torch.no_grad():
            prior(torch.zeros(1, *shape), 0.5)
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"the prior cannot take {what}'s size {tuple(shape[1:])}: {error}"
        ) from error


def load_prior(cfg: DictConfig) -> priors.Denoiser:
    """``priors.from_path(prior)`` on images of any size (:class:`priors.Tiled`, tiles of
    side ``tile`` when an image is larger); a latent prior as it is (its latent methods
    decode whole latents)."""
    tile = None if cfg.tile is None else checks.integer(cfg.tile, "tile", low=1)
    prior = priors.from_path(str(cfg.prior))
    return prior if isinstance(prior, priors.LatentPrior) else priors.Tiled(prior, tile=tile)


COLOUR = {"luma_chroma": priors.LumaChroma, "per_channel": priors.PerChannel}


def for_channels(cfg: DictConfig, prior: priors.Denoiser, channels: int) -> priors.Denoiser:
    """The prior for images with ``channels`` channels: a grey prior on colour images
    through ``colour`` (:class:`priors.LumaChroma` or :class:`priors.PerChannel`)."""
    if channels == 3 and prior.shape[0] == 1 and cfg.colour is not None:
        if str(cfg.colour) not in COLOUR:
            raise ValueError(f"colour must be one of {sorted(COLOUR)} or null, got {cfg.colour!r}")
        return COLOUR[str(cfg.colour)](prior)
    return prior


def held_out_or_given(
    cfg: DictConfig, prior: priors.Denoiser
) -> tuple[priors.Denoiser, Tensor, list[str]]:
    """The clean images: the user's (``image``: a file or a folder, with their file stems)
    or the held-out ones of a shipped prior; and the prior for their channels."""
    if cfg.image is None:
        if str(cfg.prior) not in DATA:
            raise ValueError(
                f"prior {cfg.prior!r} has no held-out images: give image=<file or folder> "
                "or measurement=<file>"
            )
        return prior, held_out(str(cfg.prior), int(cfg.images)), []
    path = Path(str(cfg.image))
    truth = read_images(path)
    prior = for_channels(cfg, prior, truth.shape[1])
    check_size(prior, tuple(truth.shape[1:]), f"image {path}")
    return prior, truth, [f.stem for f in image_files(path)]


Prepared = tuple[priors.Denoiser, Tensor | None, list[str], list[Task], float, dict[str, Any]]


def prepare(cfg: DictConfig, prior: priors.Denoiser) -> Prepared:
    """The prior for the images' channels, the ground truth (``None`` for a measurement),
    the file stems, the prepared tasks, the noise level and what the run reports about the
    measurement."""
    if cfg.measurement is not None:
        if cfg.image is not None:
            raise ValueError(
                "give image= (a clean image to measure and score) or measurement= (a "
                "degraded image to restore), not both"
            )
        measured = read_measurement(cfg)
        prior = for_channels(cfg, prior, measured.op.in_shape[0])
        check_size(prior, tuple(measured.op.in_shape), f"the restoration of {cfg.measurement}")
        task = prepare_task(
            cfg, measured.task, prior, measured.op, measured.y, measured.sigma_y, 0
        )
        about = {"task": measured.task, "sigma_y_estimated": measured.estimated}
        return prior, None, measured.stems, [task], measured.sigma_y, about
    prior, truth, names = held_out_or_given(cfg, prior)
    sigma_y = 0.05 if cfg.sigma_y is None else checks.number(cfg.sigma_y, "sigma_y", low=0)
    tasks = []
    for salt, name in enumerate(cfg.tasks):
        op, y = measure(cfg, str(name), truth, sigma_y, salt)
        tasks.append(prepare_task(cfg, str(name), prior, op, y, sigma_y, salt))
    return prior, truth, names, tasks, sigma_y, {}


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Runs every task; writes metrics.json, table.md and the figures (all at the end)."""
    for key in ("images", "samples", "steps", "threads"):
        checks.integer(cfg[key], key, low=1)
    checks.integer(cfg.seed, "seed", low=0)
    tuned_settings(cfg)  # a bad `settings` is refused before the prior loads
    torch.set_num_threads(int(cfg.threads))
    unknown = [m for m in cfg.run if m not in cfg.methods]
    unknown += [t for t in cfg.tasks if t not in cfg.tasks_available]
    unknown += [b for b in cfg.baselines if b not in BASELINES]
    if unknown:
        raise ValueError(
            f"unknown methods, tasks or baselines {unknown}; methods: {sorted(cfg.methods)}, "
            f"tasks: {sorted(cfg.tasks_available)}, baselines: {sorted(BASELINES)}"
        )
    lpips = None
    if cfg.get("lpips") is not None:
        if cfg.measurement is not None:
            raise ValueError("lpips= scores against a ground truth, which measurement= has not")
        lpips = LPIPS(str(cfg.lpips))
    prior = load_prior(cfg)
    prior, truth, names, prepared, sigma_y, about = prepare(cfg, prior)
    tasks: dict[str, dict[str, dict[str, float]]] = {}
    figures: list[tuple[dict[str, Tensor], operators.Operator, str, Path]] = []
    log.info(
        "restoring %d %s images, %d samples each: %d tasks x %d methods x %d steps",
        prepared[0].y.shape[0], "given" if names else f"held-out {cfg.prior}", cfg.samples,
        len(prepared), len(cfg.run), cfg.steps,
    )  # fmt: skip
    if about.get("sigma_y_estimated"):
        log.info("sigma_y estimated from the measurement: %.4f", sigma_y)
    with progress(len(prepared) * len(cfg.run) * int(cfg.steps), "restore") as bar:
        for task in prepared:
            results, shown = run_task(cfg, task, prior, truth, sigma_y, bar, lpips)
            tasks[task.name] = results
            title = f"{cfg.prior}: {task.name}, sigma_y = {sigma_y:.3g}, {cfg.steps} steps"
            figures.append((shown, task.op, title, out_dir / f"restore_{task.name}.png"))
            for i, stem in enumerate(names):  # a user's images: each restoration as a PNG
                for key, image in shown.items():
                    if key not in ("truth", "measurement"):
                        tag = key.replace(" ", "_")
                        write_png(out_dir / f"{stem}_{task.name}_{tag}.png", image[i])
    metrics = {
        "prior": str(cfg.prior),
        "sigma_y": sigma_y,
        "images": prepared[0].y.shape[0],
        "samples": int(cfg.samples),
        "steps": int(cfg.steps),
        "tasks": tasks,
        "config": OmegaConf.to_container(cfg, resolve=True),
    } | about
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
            if m not in BASELINES and "not applicable" not in r
        )
        for task, res in metrics["tasks"].items()
        if "pinv" in res
    }
    return markdown(metrics["tasks"]) + f"\nevery method beats the pseudo-inverse: {beaten}\n"


if __name__ == "__main__":
    launch(main)
