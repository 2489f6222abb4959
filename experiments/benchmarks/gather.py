"""Gathers a sweep's runs into one table and one plot.

    python -m experiments.benchmarks.sample -m sampler=ddim,heun steps=10,25 \
        hydra.sweep.dir=sweeps/s
    python -m experiments.benchmarks.gather sweep=sweeps/s metric=sliced_wasserstein \
        x=steps hue=sampler

Every folder under ``sweep`` that holds a Hydra run (``.hydra/overrides.yaml``) is one row:
its folder (column ``job``), its overrides (one column per swept key) and the scalar entries
of its ``metrics.json`` (nested keys joined by dots). With ``unnest=KEY``, a run whose metrics hold
``{group: {entry: scores}}`` under ``KEY`` (the restore app's ``tasks``: task, then method)
gives one row per group and entry instead, with columns ``group`` and ``entry``:

    python -m experiments.inverse.restore -m prior=natural 'tasks=[sr4],[box]' \
        sigma_y=0.01,0.05 hydra.sweep.dir=sweeps/r
    python -m experiments.benchmarks.gather sweep=sweeps/r unnest=tasks \
        'columns=[psnr_sample,ssim_sample,psnr,ssim]'

Runs without ``metrics.json`` did not finish and are listed apart. Writes ``sweep.csv``
(every column), ``sweep.md`` (the overrides and ``columns``, else ``metric``, else the first
scalar metrics) and, given ``metric`` and ``x``, ``sweep.png`` (``metric`` against ``x``,
one line per value of ``hue``) into the sweep folder, beside its own ``metrics.json`` (the
number of rows and the unfinished runs); nothing is written in the working directory.
"""

from __future__ import annotations

import csv
import json
import logging

from pathlib import Path
from typing import Any

import hydra
import matplotlib
import yaml

from omegaconf import DictConfig

from experiments.shared.report import finish
from experiments.shared.runs import launch, prepare_run, write_metrics

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

__all__ = ["collect", "flatten"]


def flatten(tree: Any, prefix: str = "") -> dict[str, float | str]:
    """The scalar leaves of nested dicts, keys joined by dots (lists are skipped)."""
    out: dict[str, float | str] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out |= flatten(value, f"{prefix}{key}.")
    elif isinstance(tree, bool | int | float | str):
        out[prefix[:-1]] = tree
    return out


def collect(
    sweep: Path, unnest: str | None = None
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The finished runs under ``sweep`` (overrides and flattened metrics per run, sorted
    by folder; per group and entry of ``unnest``, see the module), the overridden keys, and
    the folders of unfinished runs."""
    if not sweep.is_dir():
        raise ValueError(f"sweep folder {sweep} does not exist")
    rows, unfinished, swept = [], [], []
    for overrides in sorted(sweep.rglob(".hydra/overrides.yaml")):
        run = overrides.parent.parent
        metrics = run / "metrics.json"
        if not metrics.is_file():
            unfinished.append(str(run.relative_to(sweep)))
            continue
        row: dict[str, Any] = {"job": str(run.relative_to(sweep))}  # not "run": a key
        for item in yaml.safe_load(overrides.read_text()) or []:
            key, _, value = str(item).partition("=")
            if key.startswith("~"):  # a deleted key is not a swept value
                continue
            key = key.lstrip("+")
            if not key.startswith("hydra"):
                row[key] = _number(value)
                swept += [key] if key not in swept else []
        try:
            found = json.loads(metrics.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{metrics} is not valid JSON ({error})") from error
        if unnest is None:
            rows.append(row | flatten(found))
            continue
        nested = found.pop(unnest, None) if isinstance(found, dict) else None
        if not isinstance(nested, dict) or not all(isinstance(v, dict) for v in nested.values()):
            raise ValueError(f"{metrics} has no {{group: {{entry: scores}}}} under {unnest!r}")
        base = row | flatten(found)
        for group, entries in nested.items():
            for entry, scores in entries.items():
                rows.append(base | {"group": group, "entry": entry} | flatten(scores))
    if not rows and not unfinished:
        raise ValueError(f"no Hydra runs under {sweep}")
    return rows, swept, unfinished


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def write(
    rows: list[dict[str, Any]], swept: list[str], unfinished: list[str], cfg: DictConfig, out: Path
) -> None:
    """Writes ``sweep.csv``, ``sweep.md`` and ``sweep.png`` (see the module) into ``out``."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (out / "sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    keys = [*swept, *(["group", "entry"] if cfg.get("unnest") else [])]
    numeric = [c for c in columns if c not in keys and c != "job"]
    if cfg.get("columns"):
        shown = [str(c) for c in cfg.columns]
        unknown = [c for c in shown if c not in columns]
        if unknown:
            raise ValueError(f"columns {unknown} are in no run; columns: {numeric}")
    else:
        shown = [str(cfg.metric)] if cfg.metric else numeric[:6]
    lines = [f"| job | {' | '.join(keys + shown)} |", "|---" * (1 + len(keys + shown)) + "|"]
    for row in rows:
        cells = [_cell(row.get(c, "")) for c in keys + shown]
        lines.append(f"| {row['job']} | {' | '.join(cells)} |")
    if unfinished:
        lines += ["", f"Unfinished runs ({len(unfinished)}): {', '.join(unfinished)}"]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    if cfg.metric and cfg.x:
        plot(rows, str(cfg.metric), str(cfg.x), cfg.hue and str(cfg.hue), out / "sweep.png")


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot(rows: list[dict[str, Any]], metric: str, x: str, hue: str | None, path: Path) -> None:
    for name in (metric, x) + ((hue,) if hue else ()):
        if not any(name in row for row in rows):
            raise ValueError(
                f"no run has {name!r}; columns: {sorted({k for r in rows for k in r})}"
            )
    groups: dict[Any, list[tuple[Any, Any]]] = {}
    for row in rows:
        if metric in row and x in row:
            groups.setdefault(row.get(hue) if hue else metric, []).append((row[x], row[metric]))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, points in groups.items():
        points.sort(key=lambda p: p[0])
        ax.plot([p[0] for p in points], [p[1] for p in points], "-o", label=str(label))
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    if hue:
        ax.legend(title=hue, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@hydra.main(version_base=None, config_path="../configs/gather", config_name="gather")
def main(cfg: DictConfig) -> None:
    prepare_run(cfg)  # unknown keys, wrong kinds of values
    if not cfg.sweep:
        raise ValueError(
            "give the sweep folder: python -m experiments.benchmarks.gather sweep=DIR"
        )
    sweep = Path(str(cfg.sweep))
    rows, swept, unfinished = collect(sweep, cfg.get("unnest") and str(cfg.unnest))
    write(rows, swept, unfinished, cfg, sweep)
    # gathered afresh every time (the sweep may have grown): no resumption
    write_metrics({"sweep": str(sweep), "rows": len(rows), "unfinished": unfinished}, sweep)
    finish(log, sweep, (sweep / "sweep.md").read_text())


if __name__ == "__main__":
    launch(main)
