"""Run folders: finished runs are marked atomically, and a resumed sweep skips them.

Every app writes its figures and tables first and ``metrics.json`` last, through
:func:`write_metrics` (a temporary file renamed into place), so a run folder holds
``metrics.json`` exactly when the run finished. :func:`resumable` wraps an app's
``run(cfg, out_dir)``: a folder that already holds ``metrics.json`` is not run again. A
killed sweep is resumed by running the same command into the same sweep folder::

    python -m experiments.sample -m steps=10,25,50 hydra.sweep.dir=multirun/steps
    # killed half way; the same command again runs only the unfinished jobs
"""

from __future__ import annotations

import json
import os
import tempfile

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

__all__ = ["finished", "resumable", "write_metrics"]

METRICS = "metrics.json"


def write_metrics(metrics: dict[str, Any], out_dir: Path) -> None:
    """Writes ``out_dir / metrics.json`` atomically (the run's finished mark)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".metrics", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(metrics, indent=2))
        os.replace(tmp, out_dir / METRICS)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finished(out_dir: Path) -> bool:
    """Whether the run in ``out_dir`` finished (its ``metrics.json`` exists)."""
    return (Path(out_dir) / METRICS).is_file()


def resumable(
    run: Callable[[DictConfig, Path], dict[str, Any]], cfg: DictConfig, out_dir: Path
) -> dict[str, Any]:
    """``run(cfg, out_dir)``, or the metrics of the finished run already in ``out_dir``
    (with ``resume: false`` in the config, always ``run``)."""
    if bool(cfg.get("resume", True)) and finished(out_dir):
        print(f"{out_dir} finished earlier: skipped (resume=false runs it again)")
        return json.loads((Path(out_dir) / METRICS).read_text())
    return run(cfg, out_dir)
