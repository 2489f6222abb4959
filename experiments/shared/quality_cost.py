"""Reading a side-by-side run (:mod:`experiments.benchmarks.bench`): the PSNR of a side's
sample, each side's best method per budget, and the best-of rows that the bench's table and
the sweep summary (:mod:`experiments.benchmarks.quality_cost`) both print.

A bench run's ``results`` are ``{pair: {steps: {"ours": side, "theirs": side, ...}}}``; a side
holds ``psnr`` (one sample), ``nfe``, ``wall_s`` and, with ``samples`` above 1, ``spread``
(``psnr_sample``, the mean over the noise seeds, and its 95% interval ``psnr_sample_ci``); a
side that diverged holds ``diverged`` (or ``spread.diverged``) and scores nothing.
"""

from __future__ import annotations

import math

from typing import Any

SIDES = ("ours", "theirs")


def sample_psnr(side: dict[str, Any]) -> float:
    """The PSNR of one sample: averaged over the noise seeds when several were run; NaN when
    the run (or one of the seeds) diverged."""
    if "diverged" in side or "diverged" in side.get("spread", {}):
        return math.nan
    return side["spread"]["psnr_sample"] if "spread" in side else side["psnr"]


def best(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, str | None]]:
    """Per budget, each side's pair with the highest PSNR of a sample; a diverged run is
    never chosen (None when every pair of that side diverged)."""
    out: dict[str, dict[str, str | None]] = {}
    for steps in next(iter(results.values())):
        out[steps] = {}
        for side in SIDES:
            finished = {
                pair: sample_psnr(results[pair][steps][side])
                for pair in results
                if math.isfinite(sample_psnr(results[pair][steps][side]))
            }
            out[steps][side] = max(finished, key=finished.__getitem__) if finished else None
    return out


def best_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per budget: each side's best pair (``ours``, ``theirs``; None where every pair
    of the side diverged), its PSNR of a sample (``psnr_ours``, ``psnr_theirs``; NaN where
    none), the difference ours - deepinv and, when both PSNRs are means over noise seeds, its
    95% interval (the sides' seeds are independent, so the two intervals add in squares; None
    otherwise)."""
    rows = []
    for steps, chosen in best(results).items():
        row: dict[str, Any] = {"steps": int(steps)}
        cis = []
        for side in SIDES:
            pair = chosen[side]
            cell = results[pair][steps][side] if pair else {}
            row[side] = pair
            row[f"psnr_{side}"] = sample_psnr(cell) if pair else math.nan
            cis.append(cell.get("spread", {}).get("psnr_sample_ci"))
        row["difference"] = row["psnr_ours"] - row["psnr_theirs"]
        row["difference_ci"] = None if None in cis else math.hypot(*cis)
        rows.append(row)
    return rows


def wall_per_nfe_ratios(results: dict[str, dict[str, Any]]) -> list[tuple[str, int, float]]:
    """``(pair, steps, ratio)``: wall time per network evaluation, ours / deepinv's, of every
    pair and budget where both sides finished."""
    ratios = []
    for pair, per_budget in results.items():
        for steps, r in per_budget.items():
            a, b = (r[side].get("wall_per_nfe_s") for side in SIDES)
            if a is not None and b:
                ratios.append((pair, int(steps), a / b))
    return ratios
