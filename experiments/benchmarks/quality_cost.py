r"""The quality-cost summary of side-by-side runs: each side's best method per budget, for
every prior and task benched, in one table and two figures.

    python -m experiments.benchmarks.bench -m task=box,random,sr4,blur \
        'steps=[10,25,50,100,250]' images=16 repeats=1 hydra.sweep.dir=sweeps/digits
    python -m experiments.benchmarks.quality_cost 'sweeps=[sweeps/digits,sweeps/textures]'

Every run of :mod:`experiments.benchmarks.bench` under the ``sweeps`` folders (a
``metrics.json`` with ``results``, at any depth; runs of the same prior, task, noise level,
images and seeds at other budgets are merged into one, so that each budget may be its own
job) is one panel and one block of the table: at
each budget, each side's best pair by the PSNR of a sample (the mean over the noise seeds
when the run had ``samples`` above 1), the difference ours - deepinv (with its 95% interval
over the seeds when there is one) and the range of wall time per network evaluation, ours /
deepinv, over the run's pairs and budgets. The table ends with every cell where deepinv's
best leads ours, and every pair whose wall time per evaluation is more than 1.1 times
deepinv's.

Writes ``quality_cost.md``, ``quality_cost.png`` (the best PSNR of each side against network
evaluations, one panel per prior and task, ours solid, deepinv's dashed, each point labelled
with its method), ``quality_cost_wall.png`` (the same against wall time) and ``metrics.json``
into ``out`` (the first sweep folder when null).
"""

from __future__ import annotations

import json
import logging
import math

from pathlib import Path
from typing import Any

import hydra
import matplotlib

from omegaconf import DictConfig

from experiments.shared.quality_cost import SIDES, best_rows, wall_per_nfe_ratios
from experiments.shared.report import finish
from experiments.shared.runs import launch, prepare_run, write_metrics

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

WALL_BOUND = 1.1
"""The wall time per network evaluation, ours / deepinv's, that a pair must stay within."""

TASK_ORDER = ("box", "random", "sr4", "blur")


def collect(sweeps: list[Path]) -> list[dict[str, Any]]:
    """The bench runs under ``sweeps`` (their ``metrics.json``, each with its folder under
    ``folder``), runs of the same work at other budgets merged (:func:`merged`), ordered by
    prior, then task (box, random, SR, blur, then the rest), then folder."""
    runs = []
    for sweep in sweeps:
        if not sweep.is_dir():
            raise ValueError(f"sweeps: folder {sweep} does not exist")
        for path in sorted(sweep.rglob("metrics.json")):
            try:
                metrics = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON ({error})") from error
            if isinstance(metrics, dict) and {"results", "prior", "task"} <= set(metrics):
                runs.append(metrics | {"folder": str(path.parent)})
    if not runs:
        raise ValueError(f"sweeps: no bench run (metrics.json with results) under {sweeps}")
    runs = merged(runs)

    def order(run: dict[str, Any]) -> tuple[str, int, str, str]:
        task = run["task"]
        rank = TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER)
        return run["prior"], rank, task, run["folder"]

    return sorted(runs, key=order)


WORK = ("prior", "task", "sigma_y", "images", "samples")
"""What makes two bench runs the same work at other budgets: their budgets are merged."""


def merged(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of the same work (:data:`WORK`) at different budgets as one run (a sweep may run
    each budget as its own job: ``'steps=[10],[25],[50]'``). Refused: the same budget in two
    of them, or different pairs."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run in runs:
        key = tuple(run.get(k) for k in WORK)
        if key not in groups:
            groups[key] = run | {"results": {p: dict(b) for p, b in run["results"].items()}}
            continue
        into = groups[key]
        if set(into["results"]) != set(run["results"]):
            raise ValueError(
                f"sweeps: {into['folder']} and {run['folder']} bench the same work with other "
                f"pairs ({sorted(into['results'])} against {sorted(run['results'])})"
            )
        for pair, per_budget in run["results"].items():
            twice = set(per_budget) & set(into["results"][pair])
            if twice:
                raise ValueError(
                    f"sweeps: {into['folder']} and {run['folder']} both hold {pair} at "
                    f"{sorted(twice, key=int)} steps"
                )
            into["results"][pair] |= per_budget
        into["folder"] += f", {run['folder']}"
    for run in groups.values():  # budgets in increasing order, as one run holds them
        for pair, per_budget in run["results"].items():
            run["results"][pair] = dict(sorted(per_budget.items(), key=lambda kv: int(kv[0])))
    return list(groups.values())


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per run its best-of rows and wall-time ratios; over all runs the cells where deepinv's
    best leads ours and the pairs over :data:`WALL_BOUND`."""
    blocks, behind, slow = [], [], []
    for run in runs:
        rows = best_rows(run["results"])
        timed = wall_per_nfe_ratios(run["results"])
        ratios = [ratio for _, _, ratio in timed]
        where = {"prior": run["prior"], "task": run["task"], "folder": run["folder"]}
        blocks.append(where | {"samples": run.get("samples", 1), "rows": rows, "ratios": ratios})
        for r in rows:
            if not r["difference"] >= 0:  # NaN (a side with nothing finished) counts as behind
                behind.append(where | {"steps": r["steps"], "difference": r["difference"]})
        slow += [
            where | {"pair": pair, "steps": steps, "ratio": ratio}
            for pair, steps, ratio in timed
            if ratio > WALL_BOUND
        ]
    return {"runs": blocks, "behind": behind, "slow": slow}


def _psnr(value: float) -> str:
    return "diverged" if math.isnan(value) else f"{value:.2f}"


def table(summary: dict[str, Any]) -> str:
    lines = [
        (
            "| prior | task | steps (NFE) | best of ours | best of deepinv | ours - deepinv | "
            "wall per NFE, ours / deepinv |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for block in summary["runs"]:
        ratios = block["ratios"]
        wall = f"{min(ratios):.2f} to {max(ratios):.2f}" if ratios else "n/a"
        for r in block["rows"]:
            cells = [
                f"{r[side]} {_psnr(r[f'psnr_{side}'])}" if r[side] else "every pair diverged"
                for side in SIDES
            ]
            difference = "n/a" if math.isnan(r["difference"]) else f"{r['difference']:+.2f}"
            if r["difference_ci"] is not None:
                difference += f" ± {r['difference_ci']:.2f}"
            lines.append(
                f"| {block['prior']} | {block['task']} | {r['steps']} | {cells[0]} | "
                f"{cells[1]} | {difference} | {wall} |"
            )
    behind = summary["behind"]
    lines += ["", f"Cells where deepinv's best leads ours: {len(behind)}"]
    lines += [
        f"- {b['prior']}, {b['task']}, {b['steps']} steps: {b['difference']:+.2f} dB"
        for b in behind
    ]
    slow = summary["slow"]
    lines += ["", f"Pairs whose wall time per NFE is above {WALL_BOUND}x deepinv's: {len(slow)}"]
    lines += [
        f"- {s['prior']}, {s['task']}, {s['pair']}, {s['steps']} steps: {s['ratio']:.2f}x"
        for s in slow
    ]
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], x: str, path: Path) -> None:
    """One panel per run: each side's best PSNR of a sample against ``x`` (``nfe`` or
    ``wall_s`` of that best run), ours solid, deepinv's dashed, each point labelled with its
    method."""
    columns = min(4, len(runs))
    rows = math.ceil(len(runs) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(runs) :]:
        ax.set_visible(False)
    for ax, run in zip(axes.flat, runs, strict=False):
        results = run["results"]
        for side, style, colour, label in (
            ("ours", "-", "C0", "ours"), ("theirs", "--", "C1", "deepinv"),
        ):  # fmt: skip
            points = []
            for r in best_rows(results):
                pair = r[side]
                if pair is None:
                    continue
                where = results[pair][str(r["steps"])][side].get(x)
                if where is not None:
                    points.append((where, r[f"psnr_{side}"], pair))
            ax.plot(
                [p[0] for p in points], [p[1] for p in points], style, color=colour,
                marker="o", markersize=3, label=label,
            )  # fmt: skip
            for where, psnr, pair in points:
                ax.annotate(pair, (where, psnr), fontsize=5, color=colour, xytext=(2, 2),
                            textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.set_title(f"{run['prior']}, {run['task']}", fontsize=8)
        ax.set_xlabel("network evaluations" if x == "nfe" else "wall time (s)", fontsize=7)
        ax.set_ylabel("PSNR of a sample (dB)", fontsize=7)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("best of each side per budget", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(sweeps: list[Path], out: Path) -> dict[str, Any]:
    """Summarises the bench runs under ``sweeps`` into ``out`` (see the module); returns the
    summary. Gathered afresh every time (a sweep may have grown): no resumption."""
    runs = collect(sweeps)
    summary = summarise(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality_cost.md").write_text(table(summary))
    plot(runs, "nfe", out / "quality_cost.png")
    plot(runs, "wall_s", out / "quality_cost_wall.png")
    write_metrics(summary, out)  # last: the finished mark
    return summary


@hydra.main(version_base=None, config_path="../configs/quality_cost", config_name="quality_cost")
def main(cfg: DictConfig) -> None:
    prepare_run(cfg)  # unknown keys, wrong kinds of values
    if not cfg.sweeps:
        raise ValueError(
            "sweeps: give the bench sweep folders, e.g. "
            "python -m experiments.benchmarks.quality_cost 'sweeps=[sweeps/digits]'"
        )
    sweeps = [Path(str(s)) for s in cfg.sweeps]
    out = Path(str(cfg.out)) if cfg.out else sweeps[0]
    write(sweeps, out)
    finish(log, out, (out / "quality_cost.md").read_text())


if __name__ == "__main__":
    launch(main)
