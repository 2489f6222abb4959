r"""Tuned settings in the catalogue: how the tuning apps write them and how the apps read them.

Two files of ``configs/catalogue`` hold settings chosen by a tuning app, never by hand:
``baselines.yaml`` (:mod:`experiments.benchmarks.tune_baselines`: baseline, task,
:math:`\sigma_y`) and ``tuned.yaml`` (:mod:`experiments.benchmarks.tune_methods`: method,
prior, task, :math:`\sigma_y`). One rule each, for both:

- :func:`install`: the new settings replace those for the same keys, the others are kept
  (:func:`merged`), and the file's header lists the commands that produced it, the latest
  last; the file is rewritten atomically under a lock, so the jobs of a parallel sweep can
  install in turn.
- :func:`nearest_level`: settings tuned at some noise levels serve any :math:`\sigma_y`
  through the tuned level nearest in log scale.

A method's tuned settings are a part of its catalogue node (``{guidance: {zeta: 300.0}}``)
laid over it by :func:`tuned_method`; a tuning grid is written the same way with lists at the
leaves (``{guidance: {zeta: [100, 300]}}``) and read by :func:`flat_grid`.
"""

from __future__ import annotations

import copy
import fcntl
import inspect
import itertools
import math

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from priors.files import atomic_write_text

__all__ = [
    "combinations", "edges", "flat_grid", "install", "installed", "merged", "nearest_level",
    "nested", "this_command", "tuned_method", "tuned_settings",
]  # fmt: skip


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid ``{setting: [values]}``, the last setting varying
    fastest."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def edges(grid: dict[str, list[Any]], chosen: dict[str, Any]) -> list[str]:
    """The settings of ``grid`` whose ``chosen`` value is the first or last of three or more:
    the best value may lie beyond the grid, which should then be widened."""
    return [
        name for name, values in grid.items()
        if len(values) >= 3 and chosen[name] in (values[0], values[-1])
    ]  # fmt: skip


def installed(path: Path) -> dict[str, Any]:
    """The settings in the catalogue file ``path`` now (``{}`` when it has none)."""
    found = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else None
    return found if isinstance(found, dict) else {}


def merged(old: dict[str, Any], new: dict[str, Any], depth: int) -> dict[str, Any]:
    """``old`` with ``new`` laid over it: the keys of the first ``depth`` levels are merged,
    what lies below them (one setting's dictionary) is replaced whole. Neither is modified."""
    out = copy.deepcopy(old)
    for key, value in new.items():
        if depth > 1 and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value, depth - 1)
        else:
            out[key] = copy.deepcopy(value)
    return out


def this_command(command: str) -> str:
    """The command line of this run: ``command`` (the app's module call) with the run's Hydra
    overrides (a multirun job's own values), quoted for a shell where they need it,
    ``install=true`` last; ``command`` alone outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return command
    overrides = [o for o in HydraConfig.get().overrides.task if o.split("=")[0] != "install"]
    # Hydra records a deletion `~key` as `~key=null`, which would delete only a null value
    overrides = [o.removesuffix("=null") if o.startswith("~") else o for o in overrides]
    quoted = [f"'{o}'" if any(c in o for c in "[]{},~") else o for o in overrides]
    return " ".join([command, *quoted, "install=true"])


def _commands(text: str, latest: str) -> list[str]:
    """The commands recorded in a catalogue header (lines ``#   python -m ...``), then
    ``latest`` (moved last when it was there)."""
    found = [line[4:] for line in text.splitlines() if line.startswith("#   python -m")]
    return [c for c in found if c != latest] + [latest]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``'s sibling ``.<name>.lock`` while the block runs."""
    lock = path.with_name(f".{path.name}.lock")
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install(
    path: Path, new: dict[str, Any], depth: int, about: Sequence[str], command: str
) -> dict[str, Any]:
    """Merges ``new`` into the catalogue file ``path`` (:func:`merged` to ``depth``) and
    rewrites it with a header: the lines of ``about``, then every command that tuned it (the
    recorded ones and ``command``). Returns what the file now holds."""
    with _locked(path):
        text = path.read_text() if path.is_file() else ""
        settings = merged(installed(path), new, depth)
        header = "".join(f"# {line}\n" for line in about)
        header += "".join(f"#   {c}\n" for c in _commands(text, command))
        atomic_write_text(path, header + OmegaConf.to_yaml(OmegaConf.create(settings)))
    return settings


def nearest_level(levels: dict[str, Any], sigma_y: float) -> str:
    """The key of ``levels`` (noise levels written as strings) nearest to ``sigma_y`` in log
    scale (0 counts as 1e-6)."""
    if not levels:
        raise ValueError("no tuned noise levels to choose from")
    level = math.log(max(float(sigma_y), 1e-6))
    return min(levels, key=lambda s: abs(math.log(max(float(s), 1e-6)) - level))


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def flat_grid(grid: dict[str, Any], name: str) -> dict[str, list[Any]]:
    """A method's grid, nested like its node with lists at the leaves, as ``{dotted.path:
    [values]}``; each leaf a non-empty list of values (``name`` names the grid in errors)."""
    out: dict[str, list[Any]] = {}
    for key, value in grid.items():
        if isinstance(value, dict):
            out |= {f"{key}.{k}": v for k, v in flat_grid(value, f"{name}.{key}").items()}
        elif isinstance(value, list) and value and all(_scalar(v) for v in value):
            out[str(key)] = value
        else:
            raise ValueError(
                f"grid {name}.{key} must be a non-empty list of values (or a node of them), "
                f"got {value!r}"
            )
    if not out:
        raise ValueError(f"grid {name} sets nothing")
    return out


def nested(settings: dict[str, Any]) -> dict[str, Any]:
    """``{dotted.path: value}`` as the nested dictionary it names."""
    out: dict[str, Any] = {}
    for path, value in settings.items():
        *parents, leaf = path.split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out


def _accepted(node: Any) -> set[str]:
    """The settings a node can take: its keys, and the parameters of its ``_target_`` but
    those the apps give at run time (``op``, ``y``, ``sigma_y``)."""
    keys = {str(k) for k in node} if isinstance(node, DictConfig) else set()
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if target is not None:
        from hydra.utils import get_object

        keys |= set(inspect.signature(get_object(str(target))).parameters)
    return keys - {"_target_", "_partial_", "op", "y", "sigma_y"}


def _check_paths(node: Any, settings: dict[str, Any], name: str, where: str = "") -> None:
    accepted = _accepted(node)
    for key, value in settings.items():
        if key not in accepted:
            raise ValueError(
                f"method {name!r} has no setting {where}{key} to tune (it takes "
                f"{sorted(accepted)})"
            )
        if isinstance(value, dict):
            _check_paths(node.get(key), value, name, f"{where}{key}.")


def with_settings(node: DictConfig, settings: dict[str, Any], name: str) -> DictConfig:
    """Method ``name``'s catalogue ``node`` with ``settings`` (a nested part of it) laid over
    it; a setting the node does not have is refused (a typo would otherwise tune nothing)."""
    _check_paths(node, settings, name)
    node = copy.deepcopy(node)
    OmegaConf.set_struct(node, False)  # a setting the node leaves to its target's default
    return OmegaConf.merge(node, settings)


def tuned_settings(cfg: DictConfig) -> dict[str, Any]:
    """The tuned settings an app runs with: ``cfg.tuned`` (``tuned.yaml``) as a dict with
    ``settings=tuned``, none with ``settings=catalogue``; any other ``settings`` is refused."""
    if cfg.settings not in ("tuned", "catalogue"):
        raise ValueError(f"settings must be 'tuned' or 'catalogue', got {cfg.settings!r}")
    return OmegaConf.to_container(cfg.tuned) if cfg.settings == "tuned" else {}


def tuned_method(
    methods: DictConfig,
    tuned: dict[str, Any],
    name: str,
    prior: str,
    task: str,
    sigma_y: float,
) -> tuple[DictConfig, dict[str, Any] | None]:
    """Method ``name``'s node with the settings tuned for ``prior``, ``task`` and the tuned
    noise level nearest to ``sigma_y`` (``tuned``: ``configs/catalogue/tuned.yaml``), and
    those settings; the catalogue's node and None when none were tuned."""
    levels = ((tuned.get(name) or {}).get(prior) or {}).get(task)
    if not levels:
        return methods[name], None
    settings = dict(levels[nearest_level(levels, sigma_y)])
    return with_settings(methods[name], settings, name), settings
