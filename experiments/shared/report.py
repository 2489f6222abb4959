"""What an app shows while it runs: its story in the log, a progress bar sized to the work,
and, at the end, a readable table and where the outputs are.

Apps log through ``logging.getLogger(__name__)``. Under Hydra the records go to the console
and to ``<app>.log`` in the run folder, so the log holds the run's story. Progress bars
(tqdm, on standard error) are drawn on a terminal and left out of logs and pipes; the log
lines say the same in words.
"""

from __future__ import annotations

import csv
import logging

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from tqdm import tqdm

from experiments.shared.runs import prepare_run, resumable

__all__ = ["finish", "markdown_table", "means_by_method", "progress", "serve", "write_rows"]


def progress(total: int, what: str, unit: str = "step") -> tqdm:
    """A progress bar over ``total`` units of work (drawn only on a terminal)."""
    return tqdm(total=total, desc=what, unit=unit, disable=None, leave=False, dynamic_ncols=True)


def finish(log: logging.Logger, out_dir: Path, table: str | None = None) -> None:
    """Logs the run's table (Markdown) and the files the run wrote."""
    if table:
        log.info("\n%s", table.rstrip())
    out_dir = Path(out_dir)
    files = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("."))
    log.info("outputs in %s: %s", out_dir.resolve(), ", ".join(files))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of scalars as a Markdown table (columns in first-seen order; floats to four
    significant digits; nested values shown as they print)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Result rows (dicts with the same keys, in the first row's order) as a CSV file."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def means_by_method(
    rows: list[dict[str, Any]], methods: list[str], keys: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """The mean of each of ``keys`` over the rows of each method (rows carry ``"method"``)."""
    summary = {}
    for method in methods:
        part = [r for r in rows if r["method"] == method]
        summary[method] = {key: sum(r[key] for r in part) / len(part) for key in keys}
    return summary


def serve(
    cfg: DictConfig,
    run: Callable[[DictConfig, Path], dict[str, Any]],
    log: logging.Logger,
    table: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """An app's ``main``: checks the config and the run folder (:func:`prepare_run`), runs
    or resumes (:func:`resumable`), then logs the table (``table(metrics)``, or the run's
    ``table.md``) and where the outputs are."""
    run_dir = prepare_run(cfg)  # unknown keys, wrong kinds of values, the run folder
    log.info("run folder %s", run_dir.resolve())
    metrics = resumable(run, cfg, run_dir)
    written = run_dir / "table.md"
    text = (
        table(metrics) if table is not None else written.read_text() if written.is_file() else None
    )
    finish(log, run_dir, text)
    return metrics
