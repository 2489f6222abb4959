r"""Side-by-side benchmark against deepinv, in one run on the same work: a quality-cost curve.

    python -m experiments.benchmarks.bench
    python -m experiments.benchmarks.bench 'steps=[10,25,50,100,250]' samples=8 task=sr4

For each pair of ``pairs`` (ours, deepinv's loop through :mod:`experiments.shared.peers`) and
each budget of ``steps`` (a list of step counts), both sides restore the same held-out images
of the shipped ``prior`` from the same measurement (task ``task``, noise ``sigma_y``), from
the same initial noise, over that many steps, and report the PSNR and SSIM of the
restorations, the network evaluations and VJPs per sample (counted by our denoiser, so both
sides are counted alike; every method of the default pairs takes one network evaluation per
step, so a budget of steps is a budget of evaluations), the wall time (median of
``repeats``, the two sides timed in alternation so that drift of the machine falls on both
alike), the wall time per evaluation and the ratios ours / deepinv's. At each budget
each side's best method (by the PSNR of a sample) is marked.

Two floors of our own machinery, measured in the same run:

- *guided step vs. forward + VJP*: the wall time of our DPS run against ``steps`` bare
  network evaluations with one vector-Jacobian product each on the same batch (the least
  any gradient-guided step can cost), the two timed in alternation;
- *CFG batched vs. two passes*: :class:`guided.ClassifierFree` (conditional and
  unconditional rows in one network call) against the same guidance with two separate
  calls per step, on the class-conditional prior.

With ``samples`` above 1 each side also restores the same measurement from ``samples``
other noise seeds (:func:`spread`): the PSNR of one sample (averaged over seeds, far less
noisy than one run's), of the samples' mean and their per-pixel spread, which tells a
sampler that is closer to the posterior mean from one that restores better.

The floors run at the largest budget (``floors=false`` skips them).

With ``settings=tuned`` (the default) every method runs with the settings
:mod:`experiments.benchmarks.tune_methods` chose for this prior and task (at the tuned noise
level nearest to ``sigma_y``; ``configs/catalogue/tuned.yaml``), ours and deepinv's alike, and
with its catalogue settings where none were tuned; the table says which. ``settings=catalogue``
runs the catalogue's settings as they are.

A run that diverges (raises ``FloatingPointError``, or returns NaN or infinity) is recorded
with its reason and scores nothing; the other cells still run, and it is never a side's best.

Writes ``metrics.json``, ``bench.csv`` (one row per pair and budget), ``table.md`` and
``bench.png`` (PSNR against network evaluations and against wall time, ours solid and
deepinv's dashed).
"""

from __future__ import annotations

import csv
import logging
import math
import statistics

from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import matplotlib
import torch

from omegaconf import DictConfig

import checks
import operators
import priors

from experiments.benchmarks.floors import cfg_floor, vjp_floor
from experiments.shared.build import build, build_method, run_seeded
from experiments.shared.catalogue import tuned_method, tuned_settings
from experiments.shared.data import held_out
from experiments.shared.metrics import non_finite, scores
from experiments.shared.quality_cost import best, best_rows, sample_psnr
from experiments.shared.report import progress, serve
from experiments.shared.runs import budgets, launch, write_metrics
from experiments.shared.seeds import generators
from experiments.shared.timing import peak_memory, timed, timed_pair

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)


def _check(cfg: DictConfig) -> None:
    for key in ("images", "repeats", "threads", "samples"):
        checks.integer(cfg[key], key, low=1)
    checks.flag(cfg.memory, "memory")
    checks.flag(cfg.floors, "floors")
    budgets(cfg.steps)
    checks.number(cfg.sigma_y, "sigma_y", low=0)
    tuned_settings(cfg)
    if cfg.task not in cfg.tasks_available:
        raise ValueError(f"unknown task {cfg.task!r}; available: {list(cfg.tasks_available)}")
    for pair, sides in cfg.pairs.items():
        missing = [m for m in (sides.ours, sides.theirs) if m not in cfg.methods]
        if missing:
            raise ValueError(f"pair {pair!r} names unknown methods {missing}")


def compare(
    cfg: DictConfig, prior: priors.Denoiser, truth: torch.Tensor, steps_list: list[int]
) -> tuple[dict[str, dict[str, Any]], dict[str, Callable[[], Any]]]:
    """Every pair at every budget of ``steps_list`` (increasing) on the same measurement and
    initial noise: PSNR, SSIM, costs, wall times, peak memory; and our side's run of each pair
    at the largest budget (for the floor)."""
    op = build(cfg.tasks_available[cfg.task], in_shape=tuple(truth.shape[1:]))
    sigma_y, rows = float(cfg.sigma_y), truth.shape[0]
    g = torch.Generator().manual_seed(int(cfg.seed))
    y = operators.GaussianNoise(sigma_y)(op(truth), g) if sigma_y > 0 else op(truth)
    results: dict[str, dict[str, Any]] = {}
    ours: dict[str, Callable[[], Any]] = {}
    built, settings = {}, {}  # every method first: a bad setting is refused before anything runs
    tuned = tuned_settings(cfg)
    for pair, sides in cfg.pairs.items():
        for side in ("ours", "theirs"):
            try:
                node, settings[pair, side] = tuned_method(
                    cfg.methods, tuned, str(sides[side]), str(cfg.prior), str(cfg.task), sigma_y
                )
                built[pair, side] = build_method(node, prior, op=op, y=y, sigma_y=sigma_y)
            except (ValueError, TypeError) as error:
                raise type(error)(f"method {sides[side]!r} ({pair}): {error}") from error
    bar = progress(2 * len(cfg.pairs) * len(steps_list), "pairs x sides x budgets", "run")
    for pair, sides in cfg.pairs.items():
        results[str(pair)] = {}
        for steps in steps_list:
            row: dict[str, Any] = {}
            runs: dict[str, Callable[[], Any]] = {}
            for side in ("ours", "theirs"):
                method = built[pair, side]
                ts = method.times(steps)
                gens = generators(int(cfg.seed), rows, 1)
                x_T = method.initial_noise(tuple(truth.shape), gens, ts)
                cost = priors.Cost()

                def run(
                    method: Any = method, x_T: torch.Tensor = x_T, cost: Any = cost, ts: Any = ts
                ) -> Any:
                    cost.nfe = cost.vjp = 0.0
                    gens = generators(int(cfg.seed), rows, 2)
                    return method(x_T, ts, gens, cost)

                # settings None: the catalogue's
                row[side] = {"method": str(sides[side]), "settings": settings[pair, side]}
                try:
                    x = run()  # the restoration scored, and the warm-up of the timing below
                    reason = non_finite(x)
                except FloatingPointError as error:
                    reason = str(error)
                bar.update()
                if reason is not None:  # recorded, and the other cells still run
                    log.warning("%s, %s, %d steps: diverged (%s)", pair, side, steps, reason)
                    row[side] |= DIVERGED | {"diverged": reason, "nfe": cost.nfe, "vjp": cost.vjp}
                    continue
                runs[side] = run
                peak = peak_memory(run)[1] if cfg.memory else None  # one more run
                if side == "ours" and steps == steps_list[-1]:
                    ours[str(pair)] = run
                psnr_x, ssim_x = scores(x, truth)
                row[side] |= {
                    "psnr": psnr_x, "ssim": ssim_x, "nfe": cost.nfe, "vjp": cost.vjp,
                    "peak_mib": peak,
                }  # fmt: skip
                log.info("%s, %s, %d steps: PSNR %.2f dB", pair, side, steps, psnr_x)
                if int(cfg.samples) > 1:
                    row[side]["spread"] = spread(cfg, method, prior, truth, ts)
            # both sides timed in alternation, so that drift of the machine falls on both alike
            if len(runs) == 2:
                walls = timed_pair(runs["ours"], runs["theirs"], int(cfg.repeats), warm_up=False)
            else:
                walls = tuple(timed(run, int(cfg.repeats))[1] for run in runs.values())
            for side, wall in zip(runs, walls, strict=True):
                nfe = row[side]["nfe"]
                row[side] |= {"wall_s": wall, "wall_per_nfe_s": wall / nfe if nfe else None}
            a, b = row["ours"], row["theirs"]
            finished = "diverged" not in a and "diverged" not in b
            row["psnr_difference"] = a["psnr"] - b["psnr"] if finished else None
            row["wall_ratio"] = a["wall_s"] / b["wall_s"] if finished else None
            peaks = a["peak_mib"], b["peak_mib"]
            row["memory_ratio"] = None if None in peaks or not peaks[1] else peaks[0] / peaks[1]
            results[str(pair)][str(steps)] = row
    bar.close()
    return results, ours


def spread(
    cfg: DictConfig, method: Any, prior: priors.Denoiser, truth: torch.Tensor, ts: torch.Tensor
) -> dict[str, Any]:
    """``samples`` restorations of the same measurement from different noise (seeds
    ``seed + 1 ... seed + samples``) on the grid ``ts``: the mean and per-seed PSNR and SSIM of
    single samples, the PSNR and SSIM of their average (a Monte Carlo posterior mean) and the
    mean per-pixel standard deviation across them (how spread the samples are); with the
    PSNR of a sample its 95% interval over the seeds (1.96 standard errors: on 16 digits
    images one seed's PSNR has a standard deviation over seeds of about 0.3 dB, up to 1.3)."""
    xs = []
    for k in range(1, int(cfg.samples) + 1):
        seed = int(cfg.seed) + k
        x, reason = run_seeded(method, tuple(truth.shape), ts, seed, priors.Cost())
        if x is None:  # a mean over the seeds that finished would flatter the method
            return {"samples": int(cfg.samples), "diverged": f"seed {seed}: {reason}"}
        xs.append(x.double().clamp(-1, 1))
    stack = torch.stack(xs)
    each = [scores(x, truth) for x in stack]
    per_seed = [p for p, _ in each]
    psnr_mean, ssim_mean = scores(stack.mean(0), truth)
    return {
        "samples": len(per_seed),
        "psnr_per_seed": per_seed,
        "psnr_sample": statistics.mean(per_seed),
        "psnr_sample_ci": 1.96 * statistics.stdev(per_seed) / math.sqrt(len(per_seed)),
        "ssim_sample": sum(s for _, s in each) / len(each),
        "psnr_of_mean": psnr_mean,
        "ssim_of_mean": ssim_mean,
        "pixel_std": float(stack.std(0).mean()),
    }


DIVERGED = {
    "psnr": None, "ssim": None, "wall_s": None, "wall_per_nfe_s": None, "peak_mib": None,
}  # fmt: skip
"""The scores of a side whose run diverged (raised FloatingPointError or returned NaN or
infinity): none, with the reason under ``diverged``."""


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    _check(cfg)
    torch.set_num_threads(int(cfg.threads))
    prior = priors.load(str(cfg.prior))
    truth = held_out(str(cfg.prior), int(cfg.images)).float()
    steps = budgets(cfg.steps)
    results, ours = compare(cfg, prior, truth, steps)
    largest = steps[-1]
    metrics: dict[str, Any] = {
        "prior": str(cfg.prior),
        "task": str(cfg.task),
        "sigma_y": float(cfg.sigma_y),
        "steps": steps,
        "images": int(cfg.images),
        "samples": int(cfg.samples),
        "threads": int(cfg.threads),
        "results": results,
        "best": best(results),
        "floor_steps": largest,
    }
    if bool(cfg.floors):
        floor_run = vjp_floor(cfg, prior, tuple(truth.shape), largest)
        if "dps" in ours:  # timed in alternation with the floor
            dps_s, metrics["vjp_floor_s"] = timed_pair(ours["dps"], floor_run, int(cfg.repeats))
            metrics["guided_step_over_floor"] = dps_s / metrics["vjp_floor_s"]
        else:
            metrics["vjp_floor_s"] = timed(floor_run, int(cfg.repeats))[1]
        if getattr(prior, "num_classes", 0):
            metrics["cfg"] = cfg_floor(cfg, prior, truth.shape[0], largest)
    write(metrics, out_dir)
    return metrics


HEADER = [
    "method", "steps", "ours", "deepinv", "psnr_ours", "psnr_deepinv", "psnr_difference",
    "ssim_ours", "ssim_deepinv", "nfe_ours", "nfe_deepinv", "vjp_ours", "vjp_deepinv",
    "wall_ours_s", "wall_deepinv_s", "wall_ratio", "peak_ours_mib", "peak_deepinv_mib",
    "memory_ratio",
]  # fmt: skip


def _rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, per_budget in metrics["results"].items():
        for steps, r in per_budget.items():
            a, b = r["ours"], r["theirs"]
            rows.append(dict(zip(HEADER, [
                name, int(steps), a["method"], b["method"], a["psnr"], b["psnr"],
                r["psnr_difference"], a["ssim"], b["ssim"], a["nfe"], b["nfe"], a["vjp"],
                b["vjp"], a["wall_s"], b["wall_s"], r["wall_ratio"], a["peak_mib"],
                b["peak_mib"], r["memory_ratio"],
            ], strict=True)))  # fmt: skip
    return rows


def write(metrics: dict[str, Any], out: Path) -> None:
    rows = _rows(metrics)
    with (out / "bench.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, HEADER)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        (
            f"{metrics['prior']} prior, task {metrics['task']}, sigma_y {metrics['sigma_y']:g}, "
            f"{metrics['images']} images, {metrics['threads']} CPU threads"
        ),
        "",
        (
            "| method | steps | PSNR ours | PSNR deepinv | difference | SSIM ours / deepinv | "
            "NFE ours / deepinv | VJP ours / deepinv | wall ours (s) | wall deepinv (s) | "
            "ours / deepinv | peak MiB ours / deepinv |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        memory = (
            "n/a" if r["memory_ratio"] is None
            else f"{r['peak_ours_mib']:.1f} / {r['peak_deepinv_mib']:.1f}"
        )  # fmt: skip
        lines.append(
            f"| {r['method']} | {r['steps']} | {_f(r['psnr_ours'], '.2f')} | "
            f"{_f(r['psnr_deepinv'], '.2f')} | {_f(r['psnr_difference'], '+.2f')} | "
            f"{_f(r['ssim_ours'], '.3f')} / {_f(r['ssim_deepinv'], '.3f')} | "
            f"{r['nfe_ours']:g} / {r['nfe_deepinv']:g} | {r['vjp_ours']:g} / "
            f"{r['vjp_deepinv']:g} | {_f(r['wall_ours_s'], '.2f')} | "
            f"{_f(r['wall_deepinv_s'], '.2f')} | {_f(r['wall_ratio'], '.2f')} | {memory} |"
        )
    results = metrics["results"]
    if any("spread" in r["ours"] for budget in results.values() for r in budget.values()):
        lines += [
            "",
            (
                "| method | steps | samples | PSNR of a sample ours / deepinv (± 1.96 SE over the "
                "seeds) | SSIM of a sample "
                "ours / deepinv | PSNR of their mean ours / deepinv | SSIM of their mean ours "
                "/ deepinv | pixel std ours / deepinv |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, per_budget in results.items():
            for steps, r in per_budget.items():
                a, b = r["ours"].get("spread", {}), r["theirs"].get("spread", {})

                def both(key: str, spec: str, a: dict = a, b: dict = b) -> str:
                    return f"{_f(a.get(key), spec)} / {_f(b.get(key), spec)}"

                psnr = " / ".join(
                    f"{c['psnr_sample']:.2f} ± {c['psnr_sample_ci']:.2f}"
                    if "psnr_sample" in c
                    else "diverged"
                    for c in (a, b)
                )
                lines.append(
                    f"| {name} | {steps} | {metrics['samples']} | "
                    f"{psnr} | {both('ssim_sample', '.3f')} | "
                    f"{both('psnr_of_mean', '.2f')} | {both('ssim_of_mean', '.3f')} | "
                    f"{both('pixel_std', '.4f')} |"
                )
    lines += [
        "",
        (
            "Best of each side per budget (PSNR of a sample; over several seeds, the difference "
            "± 1.96 SE):"
        ),
        "",
        "| steps | ours | deepinv | ours - deepinv (dB) |",
        "|---|---|---|---|",
    ]
    for r in best_rows(results):
        cells = [
            f"{r[side]} {r[f'psnr_{side}']:.2f}" if r[side] else "every pair diverged"
            for side in ("ours", "theirs")
        ]
        difference = _f(r["difference"], "+.2f")
        if r["difference_ci"] is not None:
            difference += f" ± {r['difference_ci']:.2f}"
        lines.append(f"| {r['steps']} | {cells[0]} | {cells[1]} | {difference} |")
    failed = [
        f"- {name}, {side}, {steps} steps: "
        + (r[side].get("diverged") or r[side]["spread"]["diverged"])
        for name, per_budget in results.items()
        for steps, r in per_budget.items()
        for side in ("ours", "theirs")
        if math.isnan(sample_psnr(r[side]))
    ]
    if failed:
        lines += ["", "Runs that diverged (scored as nothing, never chosen as best):", "", *failed]
    lines += ["", "Settings (tuned: by experiments.benchmarks.tune_methods):", ""]
    first = {name: next(iter(per_budget.values())) for name, per_budget in results.items()}
    for name, r in first.items():
        for side, label in (("ours", "ours"), ("theirs", "deepinv")):
            lines.append(f"- {name}, {label}: {r[side]['method']} {_settings(r[side])}")
    if "vjp_floor_s" in metrics:
        lines += [
            "",
            (
                f"Forward + VJP floor for {metrics['floor_steps']} steps: "
                f"{metrics['vjp_floor_s']:.2f} s"
            ),
        ]
    if "guided_step_over_floor" in metrics:
        lines.append(f"Our DPS over that floor: {metrics['guided_step_over_floor']:.3f}x")
    if "cfg" in metrics:
        c = metrics["cfg"]
        lines.append(
            f"CFG batched {c['batched_s']:.2f} s vs two passes {c['two_pass_s']:.2f} s: "
            f"{c['ratio']:.2f}x (largest difference {c['max_difference']:.2g})"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot(metrics, out / "bench.png")
    write_metrics(metrics, out)  # last: the run's finished mark


def _f(value: float | None, spec: str) -> str:
    """A table cell: ``value`` formatted, or "diverged" where there is none."""
    return "diverged" if value is None or math.isnan(value) else format(value, spec)


def _settings(side: dict[str, Any]) -> str:
    """How a side's method was set: its tuned settings, or the catalogue's."""
    if side.get("settings") is None:
        return "(the catalogue's settings: none tuned for this prior and task)"
    return f"tuned {side['settings']}"


def plot(metrics: dict[str, Any], path: Path) -> None:
    """PSNR of a sample against network evaluations and against wall time, one colour per
    pair, ours solid and deepinv's dashed, each side's best marked per budget."""
    results, chosen = metrics["results"], metrics["best"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for k, (name, per_budget) in enumerate(results.items()):
        colour = f"C{k}"
        for side, style, label in (("ours", "-", "ours"), ("theirs", "--", "deepinv")):
            points = [per_budget[s][side] for s in per_budget]
            psnrs = [sample_psnr(p) for p in points]
            for ax, key in ((axes[0], "nfe"), (axes[1], "wall_s")):
                where = [math.nan if p[key] is None else p[key] for p in points]  # gap: diverged
                ax.plot(
                    where, psnrs, style, color=colour, marker="o", markersize=3,
                    label=f"{name} ({label})",
                )  # fmt: skip
                for steps, p, score in zip(per_budget, points, psnrs, strict=True):
                    if chosen[steps][side] == name:
                        ax.plot(p[key], score, "*", color=colour, markersize=10)
    for ax, label in ((axes[0], "network evaluations per sample"), (axes[1], "wall time (s)")):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("PSNR of a sample (dB)")
    axes[1].legend(fontsize=6)
    fig.suptitle(f"{metrics['prior']}, {metrics['task']} (stars: each side's best)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@hydra.main(version_base=None, config_path="../configs/bench", config_name="bench")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log)


if __name__ == "__main__":
    launch(main)
