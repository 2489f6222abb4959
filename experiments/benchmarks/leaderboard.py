r"""The Gaussian-mixture benchmark's table as a leaderboard: who wins each cell, by how much,
and how far everyone is from the floor.

Per cell :math:`(d_x, d_y)` and method, every measure is averaged over the problems the
method finished, :math:`\pm 1.96` standard errors. The ranking measure is the max-sliced
W2 distance to exact posterior samples (``max_sw2``):

- **floor**: the same distance between two independent sets of exact posterior samples of
  the same size, on the same problems and directions: what a perfect sampler scores, since
  a finite sample is never at distance 0;
- **paired difference**: each method's distance minus the reference method's on the same
  problems (only problems both finished), mean :math:`\pm 1.96` standard errors of the
  differences. Problems vary far more than methods do, so pairing removes most of the
  spread that unpaired intervals carry;
- **coverage** (``cover50``, ``cover90``): the share of exact posterior draws, projected
  on each direction, inside the method's central 50% and 90% intervals there, averaged over
  directions (:func:`evaluation.interval_coverage`): 0.5 and 0.9 when calibrated (0.499 and
  0.898 for exact draws at 1000 samples); below, a sharp but overconfident method; above, a
  too wide one;
- **verdict**: ``best`` for the lowest mean in the cell, ``≈ best`` for a method whose
  paired difference to the best has an interval containing 0 (not distinguishable on these
  problems), and ``≈ floor`` added when the method's paired difference to the floor has an
  interval containing 0. Either needs an interval no wider than the score it is compared
  with (the best's mean, the floor's mean): an interval that wide cannot tell a method at
  the floor from one many times above it (one diverging problem in five makes it so), and
  such a method gets no verdict. Both say "not distinguishable at 95% on these problems": with few
  problems the intervals are wide, so they are claims about this run, not about the
  methods in general.
"""

from __future__ import annotations

import math

from collections.abc import Iterable
from typing import Any

__all__ = ["MEASURES", "SCORE", "aggregate", "floor_cells", "markdown", "mean_ci", "paired"]

#: What each run records (besides its identity).
MEASURES = (
    "sw", "max_sw", "max_sw2", "mean_err", "cov_err", "cover50", "cover90", "nfe", "vjp", "wall_s",
)  # fmt: skip
#: The ranking measure.
SCORE = "max_sw2"


def mean_ci(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 1.96 standard errors (0 for a single value, NaN for none)."""
    v = [float(x) for x in values]
    if not v:
        return math.nan, math.nan
    mean = sum(v) / len(v)
    if len(v) < 2:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in v) / (len(v) - 1)
    return mean, 1.96 * math.sqrt(var / len(v))


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float]:
    """Mean and 1.96 standard errors of ``a - b`` over the problems both hold."""
    return mean_ci(a[p] - b[p] for p in sorted(set(a) & set(b)))


def _scores(rows: list[dict[str, Any]]) -> dict[int, float]:
    return {int(r["problem"]): float(r[SCORE]) for r in rows if not r["failed"]}


def aggregate(
    rows: list[dict[str, Any]],
    reference: str | None = None,
    floors: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per (method, d_x, d_y): means and intervals of :data:`MEASURES`, the paired
    difference of the score to ``reference`` (``vs_ref``), and the verdict."""
    groups: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["d_x"], row["d_y"], row["method"]), []).append(row)
    floor_scores: dict[tuple[int, int], dict[int, float]] = {}
    for f in floors or []:
        floor_scores.setdefault((f["d_x"], f["d_y"]), {})[int(f["problem"])] = float(f[SCORE])
    table = []
    for (d_x, d_y, method), group in sorted(groups.items()):
        ok = [r for r in group if not r["failed"]]
        out: dict[str, Any] = {
            "method": method, "d_x": d_x, "d_y": d_y, "problems": len(group),
            "failed": len(group) - len(ok),
        }  # fmt: skip
        for key in MEASURES:
            out[key], out[key + "_ci"] = mean_ci(r[key] for r in ok)
        ref = groups.get((d_x, d_y, reference)) if reference is not None else None
        out["vs_ref"], out["vs_ref_ci"] = (
            paired(_scores(group), _scores(ref)) if ref is not None else (math.nan, math.nan)
        )
        out["verdict"], out["at_floor"] = "", False
        cell_floor = floor_scores.get((d_x, d_y))
        if cell_floor and ok:
            mean, ci = paired(_scores(group), cell_floor)
            out["at_floor"] = _close(mean, ci, mean_ci(cell_floor.values())[0])
        table.append(out)
    for d_x, d_y in {(r["d_x"], r["d_y"]) for r in table}:
        cell = [
            r for r in table if (r["d_x"], r["d_y"]) == (d_x, d_y) and not math.isnan(r[SCORE])
        ]
        if not cell:
            continue
        best = min(cell, key=lambda r: r[SCORE])
        best_scores = _scores(groups[(d_x, d_y, best["method"])])
        for r in cell:
            if r is best:
                r["verdict"] = "best"
            else:
                mean, ci = paired(_scores(groups[(d_x, d_y, r["method"])]), best_scores)
                r["verdict"] = "≈ best" if _close(mean, ci, best[SCORE]) else ""
            if r.get("at_floor"):
                r["verdict"] = (r["verdict"] + ", ≈ floor").lstrip(", ")
    return table


def _close(mean: float, ci: float, scale: float) -> bool:
    """Whether a paired difference is indistinguishable from 0 (its interval holds 0) by an
    interval narrow enough to tell (no wider than ``scale``, the score compared with)."""
    return bool(abs(mean) <= ci <= scale)


def floor_cells(floors: list[dict[str, Any]]) -> dict[tuple[int, int], tuple[float, float]]:
    """The floor per cell: mean and interval of the exact-vs-exact score."""
    cells: dict[tuple[int, int], list[float]] = {}
    for f in floors:
        cells.setdefault((f["d_x"], f["d_y"]), []).append(float(f[SCORE]))
    return {cell: mean_ci(v) for cell, v in cells.items()}


def markdown(
    table: list[dict[str, Any]],
    floors: dict[tuple[int, int], tuple[float, float]] | None = None,
    reference: str | None = None,
) -> str:
    """The leaderboard: per cell, the floor row, then each method."""
    vs = f"Δ max-SW2 vs {reference}" if reference else "Δ max-SW2 vs ref"
    lines = [
        (
            "| d_x | d_y | method | SW | max-SW | max-SW2 | "
            f"{vs} | mean err | cov err | cover 50% | cover 90% | NFE | VJP | wall s | "
            "diverged | verdict |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    shown: set[tuple[int, int]] = set()
    for r in table:
        cell = (r["d_x"], r["d_y"])
        if floors and cell in floors and cell not in shown:
            mean, ci = floors[cell]
            lines.append(
                f"| {cell[0]} | {cell[1]} | exact (floor) | | | {mean:.3f} ± {ci:.3f} "
                "| | | | | | 0 | 0 | | | floor |"
            )
        shown.add(cell)
        delta = "-" if math.isnan(r["vs_ref"]) else f"{r['vs_ref']:+.3f} ± {r['vs_ref_ci']:.3f}"
        lines.append(
            f"| {r['d_x']} | {r['d_y']} | {r['method']} | {r['sw']:.3f} ± {r['sw_ci']:.3f} | "
            f"{r['max_sw']:.3f} ± {r['max_sw_ci']:.3f} | "
            f"{r['max_sw2']:.3f} ± {r['max_sw2_ci']:.3f} | {delta} | "
            f"{r['mean_err']:.3f} ± {r['mean_err_ci']:.3f} | "
            f"{r['cov_err']:.3f} ± {r['cov_err_ci']:.3f} | "
            f"{r['cover50']:.2f} ± {r['cover50_ci']:.2f} | "
            f"{r['cover90']:.2f} ± {r['cover90_ci']:.2f} | {r['nfe']:.0f} | {r['vjp']:.0f} | "
            f"{r['wall_s']:.2f} | {r['failed']}/{r['problems']} | {r['verdict']} |"
        )
    return "\n".join(lines) + "\n"
