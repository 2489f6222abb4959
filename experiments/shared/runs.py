"""Run folders: what every app checks before it runs, and how a finished run is marked.

Every Hydra app's ``main`` calls :func:`prepare_run` first. It refuses, before anything is
computed:

- keys the app does not have (``+image=photo.png`` on an app that reads no image);
- values of the wrong kind for a key, judged against the app's own defaults: a fraction
  where the default is an integer (``steps=2.7``), text where it is a number, a number where
  it is true/false, a single value where it is a list;
- a run folder it cannot write into (the error names the folder and the OS error).

Before Hydra starts, :func:`launch` (each app's ``__main__``) checks that the run folder the
command line names (``hydra.run.dir``, ``hydra.sweep.dir``, or Hydra's default under the
working folder) can be created, so a read-only place fails with one clear line rather than a
logging-handler error from inside Hydra.

Every app writes its figures and tables first and ``metrics.json`` last, through
:func:`write_metrics` (a temporary file renamed into place, readable like any file the user
writes), so a run folder holds ``metrics.json`` exactly when the run finished.
:func:`resumable` wraps an app's ``run(cfg, out_dir)``: a folder that already holds
``metrics.json`` from the same configuration is not run again, and one from another
configuration is refused (``resume=false`` runs it again). A killed sweep is resumed by
running the same command into the same sweep folder::

    python -m experiments.benchmarks.sample -m steps=10,25,50 hydra.sweep.dir=multirun/steps
    # killed half way; the same command again runs only the unfinished jobs
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from priors.files import atomic_write_text

__all__ = [
    "CONFIG",
    "budgets",
    "check_against",
    "finished",
    "launch",
    "prepare_run",
    "resumable",
    "write_metrics",
]

METRICS = "metrics.json"
#: The configuration of the run in a folder, written before the run starts.
CONFIG = "run_config.json"
#: Keys whose value may change between a finished run and its resumption.
_VOLATILE = ("resume",)
#: Keys every app takes besides its own (``+resume=false``).
_COMMON = ("hydra", "resume")


def budgets(steps: Any) -> list[int]:
    """The step counts of an app's ``steps`` (one number or a list), increasing; each an integer
    of at least 1, none repeated."""
    values = list(steps) if isinstance(steps, ListConfig | list | tuple) else [steps]
    if not values:
        raise ValueError("steps must name at least one budget, got an empty list")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"steps must be integers >= 1, got {value!r}")
        out.append(int(value))
    if len(set(out)) != len(out):
        raise ValueError(f"steps must not repeat a budget, got {out}")
    return sorted(out)


def write_metrics(metrics: dict[str, Any], out_dir: Path) -> None:
    """Writes ``out_dir / metrics.json`` atomically (the run's finished mark) through
    :func:`priors.files.atomic_write_text`. If the folder cannot be written, the metrics go
    to a file in the system's temporary folder and the error says where."""
    text = json.dumps(metrics, indent=2)
    try:
        atomic_write_text(Path(out_dir) / METRICS, text)
    except OSError as error:
        fd, rescue = tempfile.mkstemp(prefix="metrics-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        raise OSError(
            f"cannot write {Path(out_dir) / METRICS} ({error}); the metrics were saved to {rescue}"
        ) from error


def finished(out_dir: Path) -> bool:
    """Whether the run in ``out_dir`` finished (its ``metrics.json`` exists)."""
    return (Path(out_dir) / METRICS).is_file()


def _plain(cfg: DictConfig) -> dict[str, Any]:
    """The configuration to compare: resolved, without Hydra's node and volatile keys."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return {k: v for k, v in plain.items() if k not in (*_VOLATILE, "hydra")}


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                out.append(f"{where} ({'added' if key not in old else 'removed'})")
            else:
                out += _differences(old[key], new[key], where)
        return out
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def resumable(
    run: Callable[[DictConfig, Path], dict[str, Any]], cfg: DictConfig, out_dir: Path
) -> dict[str, Any]:
    """``run(cfg, out_dir)``, or the metrics of the finished run already in ``out_dir`` when
    it ran the same configuration; a finished run of another configuration is refused (with
    ``resume: false`` in the config, always ``run``)."""
    out_dir = Path(out_dir)
    current = _plain(cfg)
    if bool(cfg.get("resume", True)) and finished(out_dir):
        stored = out_dir / CONFIG
        previous = json.loads(stored.read_text()) if stored.is_file() else None
        if previous == current:
            logging.getLogger(__name__).info(
                "%s finished earlier with this configuration: skipped", out_dir
            )
            return json.loads((out_dir / METRICS).read_text())
        changes = _differences(previous, current) if previous is not None else ["unknown"]
        raise ValueError(
            f"{out_dir} holds a finished run of another configuration (differences: "
            f"{', '.join(changes[:8])}): choose another run folder (hydra.run.dir or "
            "hydra.sweep.dir), or resume=false to run again and replace it"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS).unlink(missing_ok=True)  # a new run: no stale finished mark
    (out_dir / CONFIG).write_text(json.dumps(current, indent=2, sort_keys=True))
    return run(cfg, out_dir)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | ListConfig):
        return "a list"
    if isinstance(value, dict | DictConfig):
        return "a group of settings"
    return type(value).__name__


def _fits(default: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``default`` (see the module)."""
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        )
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list | ListConfig):
        return isinstance(value, list | ListConfig)
    if isinstance(default, dict | DictConfig):
        return isinstance(value, dict | DictConfig)
    return True


def check_against(cfg: DictConfig, defaults: DictConfig) -> None:
    """Refuses top-level keys that ``defaults`` lacks and values whose kind does not fit the
    default's (see the module); keys below the top level may be added (new methods)."""
    unknown = [key for key in cfg if key not in defaults and key not in _COMMON]
    if unknown:
        raise ValueError(
            f"unknown setting(s) {unknown}: this app takes {sorted(k for k in defaults)}"
        )

    def walk(default: Any, value: Any, where: str) -> None:
        if not _fits(default, value):
            raise ValueError(
                f"{where} must be {_kind(default)} (its default is {default!r}), got {value!r}"
            )
        if isinstance(default, DictConfig) and isinstance(value, DictConfig):
            for key in default:
                if key in value:
                    walk(default[key], value[key], f"{where}.{key}")

    for key in defaults:
        if key != "hydra" and key in cfg:
            walk(OmegaConf.select(defaults, str(key)), OmegaConf.select(cfg, str(key)), str(key))


def prepare_run(cfg: DictConfig) -> Path:
    """The checks of the module, run first by every app's ``main``; returns the run folder."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    defaults = compose(config_name=hydra_cfg.job.config_name)
    check_against(cfg, defaults)
    out_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".probe"):
            pass
    except OSError as error:
        raise OSError(f"the run folder {out_dir} is not writable: {error}") from error
    return out_dir


def _requested_folder(argv: list[str]) -> Path:
    """The run (or sweep) folder a command line asks Hydra for."""
    sweep = "-m" in argv or "--multirun" in argv
    wanted = "hydra.sweep.dir=" if sweep else "hydra.run.dir="
    for arg in argv:
        if arg.startswith(wanted):
            return Path(arg[len(wanted) :])
    return Path("multirun" if sweep else "outputs")


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be created and written, or None (it, or its nearest existing
    parent, must be a writable folder)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def launch(main: Callable[[], None], argv: list[str] | None = None) -> None:
    """Runs a Hydra app's ``main`` after checking its run folder (see the module)."""
    argv = sys.argv[1:] if argv is None else argv
    folder = _requested_folder(argv)
    reason = unwritable(folder)
    if reason is not None:
        sys.exit(f"error: cannot create the run folder {folder}: {reason}")
    main()
