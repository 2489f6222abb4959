r"""Conditional guidance on the shipped digits prior: scale sweeps and their trade-offs.

    python -m experiments.generation.conditional
    python -m experiments.generation.conditional samples=100 'sweeps=[cfg,safety]'

Sweeps (each point draws ``samples`` digits from the same initial noise, DDIM):

- ``cfg``: classifier-free guidance (:class:`guided.ClassifierFree`) over ``cfg_scales``,
  requested classes cycling 0..9;
- ``cfgpp``: CFG++ (:class:`guided.CFGPlusPlus`, a sampler: it renoises with the
  unconditional noise) over ``cfgpp_scales`` (its :math:`\lambda \in [0, 1]`), the same
  requests as ``cfg``;
- ``apg``: adaptive projected guidance (:class:`guided.APG`, settings ``apg``) over
  ``apg_scales``, the same requests as ``cfg``: compare the two at equal scales (and equal
  network evaluations, two per step);
- ``pag``: perturbed-attention guidance (:class:`guided.PAG`, layers ``pag.layers``) of the
  conditional prior over ``pag_scales``, the same requests as ``cfg``: two network
  evaluations per step, as classifier-free guidance, but no unconditional pass;
- ``pag_cfg``: the same on top of classifier-free guidance at scale ``pag_cfg_scale`` in
  diffusers' three-pass form (``guided.PAG(..., cfg_scale=...)``: unconditional, conditional
  and perturbed conditional passes, three network evaluations per step; scale 0 is CFG);
- ``auto``: AutoGuidance (:class:`guided.AutoGuidance`) of the conditional prior by the
  shipped weak model ``auto.weak`` over ``auto_scales``, the same requests as ``cfg``: two
  network evaluations per step (the weak one far cheaper);
- ``classifier``: classifier guidance (:class:`guided.ClassifierGuidance`, the shipped
  noise-conditional classifier) of the *unconditional* prior over ``classifier_scales``;
- ``safety``: :class:`guided.SafetyGuidance` away from class ``forbidden`` over
  ``safety_scales`` (unconditional prior);
- ``sag``: :class:`guided.SelfAttentionGuidance` of the unconditional prior over
  ``sag_scales``;
- ``sag_cfg``: the same on top of classifier-free guidance at scale ``sag_cfg_scale``
  (requested classes as for ``cfg``);
- ``inpaint``: classifier-free guidance plus DPS (the paper's update) completing the top
  half of held-out digits towards requested classes.

Scores come from the *clean* classifier, which never saw generated data: class agreement
with the request, the forbidden-class rate, and the Fréchet distance (FD) in its pooled
feature space to the even-indexed half of the held-out split (to its allowed classes for
``safety``). The row ``data`` scores the other (odd-indexed) held-out half against it: the
FD of real digits the classifier never saw, the floor a perfect sampler would reach (at
that half's size; training digits would not do, the classifier fits them more tightly).

Writes ``results.csv``, ``metrics.json``, ``curves.png`` (agreement / FD / forbidden rate
against scale) and ``samples_<sweep>.png`` (grids per scale).

References:
    | Classifier-Free Diffusion Guidance (Ho & Salimans, 2022) https://arxiv.org/abs/2207.12598
    | Diffusion Models Beat GANs on Image Synthesis (Dhariwal & Nichol, 2021)
    | https://arxiv.org/abs/2105.05233
    | Improving Sample Quality of Diffusion Models Using Self-Attention Guidance
    | (Hong et al., 2023) https://arxiv.org/abs/2210.00939
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import time

from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch

from omegaconf import DictConfig
from torch import Tensor

import guided
import operators
import priors

from experiments.generation.digit_scores import Scorer
from experiments.generation.figures import curves, samples_figure
from experiments.shared.report import markdown_table, progress, serve
from experiments.shared.runs import launch, write_metrics

log = logging.getLogger(__name__)

SWEEPS = (
    "cfg", "cfgpp", "apg", "pag", "pag_cfg", "auto", "classifier", "safety", "sag", "sag_cfg",
    "inpaint",
)  # fmt: skip


def _sample(
    denoiser: priors.Denoiser,
    x_T: Tensor,
    steps: int,
    sampler: guided.Sampler | None = None,
    **cond: Any,
) -> tuple[Tensor, priors.Cost, float]:
    """Samples with ``sampler`` (DDIM, eta = 0, by default) on the uniform grid."""
    sampler = guided.DDIM() if sampler is None else sampler
    cost = priors.Cost()
    start = time.perf_counter()
    with priors.measure(cost, batch=x_T.shape[0]):
        x = sampler(denoiser, x_T, guided.time_grid(steps), **cond)
    return x.detach(), cost, time.perf_counter() - start


def _check(cfg: DictConfig) -> None:
    unknown = [s for s in cfg.sweeps if s not in SWEEPS]
    if unknown:
        raise ValueError(f"unknown sweeps {unknown}; available: {list(SWEEPS)}")
    if int(cfg.samples) < 10 or int(cfg.steps) < 1:
        raise ValueError("samples must be >= 10 (the FD needs them) and steps >= 1")
    for key in (
        "cfg_scales",
        "cfgpp_scales",
        "apg_scales",
        "pag_scales",
        "auto_scales",
        "classifier_scales",
        "safety_scales",
        "sag_scales",
    ):
        values = list(cfg[key])
        if not values or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ValueError(f"{key} must be a non-empty list of finite numbers, got {values}")
    if not all(0 <= v <= 1 for v in cfg.cfgpp_scales):
        raise ValueError(
            f"cfgpp_scales must lie in [0, 1] (CFG++'s lambda), got {cfg.cfgpp_scales}"
        )
    for key in ("pag_scales", "auto_scales"):
        if not all(v >= 0 for v in cfg[key]):
            raise ValueError(f"{key} must be >= 0 (the guider's scale), got {list(cfg[key])}")
    for key in ("sag_cfg_scale", "pag_cfg_scale"):
        if not isinstance(cfg[key], int | float) or not math.isfinite(cfg[key]):
            raise ValueError(f"{key} must be a finite number, got {cfg[key]}")
    if not 0 <= int(cfg.forbidden) < 10:
        raise ValueError(f"forbidden must be a digit class 0..9, got {cfg.forbidden}")
    node = cfg.inpaint
    if int(node.images) < 1 or float(node.sigma_y) < 0 or int(node.steps) < 1:
        raise ValueError("inpaint.images and inpaint.steps must be >= 1, inpaint.sigma_y >= 0")
    if int(node.plausibility_samples) < 1 or not 0 < float(node.plausible) <= 1:
        raise ValueError("inpaint.plausibility_samples must be >= 1 and plausible in (0, 1]")


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Runs the configured sweeps; writes the CSV, metrics and figures."""
    torch.set_num_threads(int(cfg.threads))
    _check(cfg)
    prior = priors.load("digits")
    noisy = priors.load_classifier("digits", noisy=True)
    if {"pag", "pag_cfg"} & set(cfg.sweeps):  # the layers are checked before any sweep
        guided.PAG(prior, 0.0, layers=list(cfg.pag.layers))
    weak = functools.cache(lambda: priors.load(str(cfg.auto.weak)))
    if "auto" in cfg.sweeps:  # loaded and checked against the prior before any sweep
        guided.AutoGuidance(prior, weak(), 1.0)
    scorer = Scorer()
    n, steps, forbidden = int(cfg.samples), int(cfg.steps), int(cfg.forbidden)
    label = torch.arange(n) % prior.num_classes
    x_T = guided.initial_noise(
        prior.schedule, (n, *prior.shape), torch.Generator().manual_seed(int(cfg.seed))
    )
    rows: list[dict[str, Any]] = []
    grids: dict[str, dict[float, Tensor]] = {}
    rows.append(
        {"sweep": "data", "scale": math.nan, "samples": len(scorer.floor)}
        | scorer.score(scorer.floor, None, forbidden)
    )

    # each maker gives the denoiser, its conditions and optionally its sampler (DDIM otherwise)
    makers: dict[str, tuple[list[float], Callable[[float], tuple[Any, ...]]]] = {
        "cfg": (
            list(cfg.cfg_scales),
            lambda s: (guided.ClassifierFree(prior, s), {"label": label}),
        ),
        "cfgpp": (
            list(cfg.cfgpp_scales),
            lambda s: (prior, {"label": label}, guided.CFGPlusPlus(s)),
        ),
        "apg": (
            list(cfg.apg_scales),
            lambda s: (guided.APG(prior, s, **cfg.apg), {"label": label}),
        ),
        "pag": (
            list(cfg.pag_scales),
            lambda s: (guided.PAG(prior, s, layers=list(cfg.pag.layers)), {"label": label}),
        ),
        "pag_cfg": (
            list(cfg.pag_scales),
            lambda s: (
                guided.PAG(
                    prior, s, layers=list(cfg.pag.layers), cfg_scale=float(cfg.pag_cfg_scale)
                ),
                {"label": label},
            ),
        ),
        "auto": (
            list(cfg.auto_scales),
            lambda s: (guided.AutoGuidance(prior, weak(), s), {"label": label}),
        ),
        "classifier": (
            list(cfg.classifier_scales),
            lambda s: (
                guided.GuidedDenoiser(prior, guided.ClassifierGuidance(noisy, label, s)),
                {},
            ),
        ),
        "safety": (
            list(cfg.safety_scales),
            lambda s: (
                guided.GuidedDenoiser(prior, guided.SafetyGuidance(noisy, forbidden, s)),
                {},
            ),
        ),
        "sag": (
            list(cfg.sag_scales),
            lambda s: (guided.SelfAttentionGuidance(prior, s, **cfg.sag), {}),
        ),
        "sag_cfg": (
            list(cfg.sag_scales),
            lambda s: (
                guided.SelfAttentionGuidance(
                    guided.ClassifierFree(prior, float(cfg.sag_cfg_scale)), s, **cfg.sag
                ),
                {"label": label},
            ),
        ),
    }
    for sweep in cfg.sweeps:
        log.info("sweep %s", sweep)
        if sweep == "inpaint":
            rows.extend(inpaint(cfg, prior, scorer, grids))
            continue
        scales, make = makers[sweep]
        bar = progress(len(scales), sweep, "scale")
        for scale in scales:
            denoiser, cond, *sampler = make(float(scale))
            x, cost, wall = _sample(denoiser, x_T, steps, *sampler, **cond)
            requested = (
                label
                if sweep
                in ("cfg", "cfgpp", "apg", "pag", "pag_cfg", "auto", "classifier", "sag_cfg")
                else None
            )
            scores = scorer.score(x, requested, forbidden if sweep == "safety" else None)
            rows.append(
                {"sweep": sweep, "scale": float(scale), "nfe": cost.nfe, "vjp": cost.vjp}
                | scores
                | {"wall_s": wall}
            )
            grids.setdefault(sweep, {})[float(scale)] = x[:20]
            bar.update()
            log.info("%s at scale %g: FD %.2f (%.1f s)", sweep, scale, scores["fd"], wall)
        bar.close()
    write(rows, out_dir)
    curves(rows, out_dir / "curves.png")
    for sweep, grid in grids.items():
        samples_figure(grid, out_dir / f"samples_{sweep}.png", sweep)
    metrics = {"rows": rows, "samples": n, "steps": steps, "forbidden": forbidden}
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def inpaint(
    cfg: DictConfig, prior: priors.Denoiser, scorer: Scorer, grids: dict[str, dict[float, Tensor]]
) -> list[dict[str, Any]]:
    """CFG + DPS completing the top half of held-out digits towards requested classes:
    every image is asked for every class; agreement is reported overall, where the request
    is the true class, where it is another class, and on the *plausible* requests (classes
    the unguided posterior reaches, see :func:`_plausible`), with the RMS misfit on the
    visible half."""
    node = cfg.inpaint
    images, sigma_y = int(node.images), float(node.sigma_y)
    pick = torch.linspace(0, len(scorer.x_test) - 1, images).round().long()
    truth, true_class = scorer.x_test[pick], scorer.y_test[pick]
    c, h, w = prior.shape
    op = operators.Inpainting(operators.half_mask(h, w, "top"), prior.shape)
    g = torch.Generator().manual_seed(int(cfg.seed) + 1)
    y = operators.GaussianNoise(sigma_y)(op(truth), g)
    requested = torch.arange(10).repeat_interleave(images)
    y_all, truth_all = y.repeat(10, 1, 1, 1), truth.repeat(10, 1, 1, 1)
    plausible = _plausible(node, prior, scorer, op, y, g)[
        torch.arange(10 * images) % images, requested
    ]
    rows = []
    for scale in node.scales:
        denoiser = guided.ClassifierFree(prior, float(scale))
        sampler = guided.DPSSampler(op, y_all, zeta=float(node.zeta))
        x_T = guided.initial_noise(prior.schedule, truth_all.shape, g)
        cost = priors.Cost()
        start = time.perf_counter()
        with priors.measure(cost, batch=len(requested)):
            x = sampler(
                denoiser, x_T, guided.time_grid(int(node.steps)), generator=g, label=requested
            ).detach()
        wall = time.perf_counter() - start
        predicted = scorer.predict(x.clamp(-1, 1))
        same = requested == true_class.repeat(10)
        misfit = (op(x) - y_all).flatten(1).square().sum(1) / float(
            op(torch.ones(1, c, h, w)).sum()
        )
        rows.append(
            {
                "sweep": "inpaint",
                "scale": float(scale),
                "agreement": float((predicted == requested).float().mean()),
                "agreement_true_class": float((predicted[same] == requested[same]).float().mean()),
                "agreement_other_class": float(
                    (predicted[~same] == requested[~same]).float().mean()
                ),
                "agreement_plausible": float(
                    (predicted[plausible] == requested[plausible]).float().mean()
                ),
                "plausible_pairs": int(plausible.sum()),
                "visible_rms": float(misfit.sqrt().mean()),
                "sigma_y": sigma_y,
                "nfe": cost.nfe,
                "vjp": cost.vjp,
                "wall_s": wall,
            }
        )
        order = torch.arange(10) * images  # the first image asked for every class
        grids.setdefault("inpaint", {})[float(scale)] = torch.cat([y_all[:1], x[order]])
    return rows


def _plausible(
    node: DictConfig,
    prior: priors.Denoiser,
    scorer: Scorer,
    op: operators.Operator,
    y: Tensor,
    g: torch.Generator,
) -> Tensor:
    """Which classes each measurement admits, :math:`(images, 10)`: those the clean
    classifier finds in at least a fraction ``plausible`` of ``plausibility_samples``
    unguided (unconditional prior + DPS) posterior samples."""
    k, share = int(node.plausibility_samples), float(node.plausible)
    y_rep = y.repeat_interleave(k, 0)
    x_T = guided.initial_noise(prior.schedule, (len(y_rep), *prior.shape), g)
    sampler = guided.DPSSampler(op, y_rep, zeta=float(node.zeta))
    x = sampler(prior, x_T, guided.time_grid(int(node.steps)), generator=g).detach()
    votes = torch.nn.functional.one_hot(scorer.predict(x.clamp(-1, 1)), 10).view(len(y), k, 10)
    return votes.float().mean(1) >= share


def write(rows: list[dict[str, Any]], out_dir: Path) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


@hydra.main(version_base=None, config_path="../configs/conditional", config_name="conditional")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log, lambda metrics: markdown_table(metrics["rows"]))


if __name__ == "__main__":
    launch(main)
