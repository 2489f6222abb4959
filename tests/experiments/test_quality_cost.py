"""The quality-cost summary: each side's best per budget across bench runs, the cells where
deepinv leads and the pairs over the wall-time bound, read from the runs' metrics."""

import json
import math

import pytest

from experiments.benchmarks import quality_cost
from experiments.shared.quality_cost import best_rows


def _side(psnr, wall_per_nfe, nfe=10, spread=None):
    side = {"psnr": psnr, "nfe": nfe, "wall_s": wall_per_nfe * nfe, "wall_per_nfe_s": wall_per_nfe}
    return side | ({"spread": spread} if spread else {})


def _run(folder, prior, task, cells, samples=1):
    """A bench run's metrics: ``cells[pair][steps] = (ours side, theirs side)``."""
    results = {
        pair: {str(s): {"ours": a, "theirs": b} for s, (a, b) in per.items()}
        for pair, per in cells.items()
    }
    folder.mkdir(parents=True)
    metrics = {"prior": prior, "task": task, "samples": samples, "results": results}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_best_rows_choose_by_the_mean_over_seeds_and_carry_the_interval():
    spread_a = {"psnr_sample": 20.0, "psnr_sample_ci": 0.3}
    spread_b = {"psnr_sample": 21.0, "psnr_sample_ci": 0.4}
    spread_c = {"psnr_sample": 21.0, "psnr_sample_ci": 0.3}
    results = {
        "dps": {"10": {"ours": _side(25.0, 1.0, spread=spread_a), "theirs": _side(19.0, 1.0,
                       spread=spread_c)}},
        "ddrm": {"10": {"ours": _side(18.0, 1.0, spread=spread_b), "theirs": {"diverged": "x"}}},
    }  # fmt: skip
    (row,) = best_rows(results)
    assert row["ours"] == "ddrm" and row["psnr_ours"] == 21.0  # the seeds' mean, not psnr
    assert row["theirs"] == "dps" and row["difference"] == pytest.approx(0.0)
    assert row["difference_ci"] == pytest.approx(0.5)  # hypot(0.4, 0.3)
    everything_diverged = {"dps": {"10": {"ours": {"diverged": "x"}, "theirs": _side(3.0, 1.0)}}}
    (row,) = best_rows(everything_diverged)
    assert row["ours"] is None and math.isnan(row["difference"])


def test_summary_table_lists_cells_behind_and_slow_pairs(tmp_path):
    _run(tmp_path / "d" / "box", "digits", "box", {
        "dps": {10: (_side(21.0, 1.0), _side(20.0, 1.0)),
                25: (_side(27.0, 1.2), _side(28.0, 1.0))},
        "ddrm": {10: (_side(20.5, 0.5), _side(20.2, 0.5)),
                 25: (_side(22.0, 0.5), _side(22.0, 0.5))},
    })  # fmt: skip
    _run(tmp_path / "t" / "sr4", "textures", "sr4", {
        "ddrm": {10: (_side(19.0, 0.9), _side(18.0, 1.0))},
    })  # fmt: skip
    (tmp_path / "t" / "metrics.json").write_text(json.dumps({"runs": []}))  # not a bench run
    quality_cost.write([tmp_path / "d", tmp_path / "t"], tmp_path / "o")
    text = (tmp_path / "o" / "quality_cost.md").read_text()
    assert "| digits | box | 10 | dps 21.00 | ddrm 20.20 | +0.80 | 1.00 to 1.20 |" in text
    assert "| digits | box | 25 | dps 27.00 | dps 28.00 | -1.00 | 1.00 to 1.20 |" in text
    assert "| textures | sr4 | 10 | ddrm 19.00 | ddrm 18.00 | +1.00 | 0.90 to 0.90 |" in text
    assert "Cells where deepinv's best leads ours: 1\n- digits, box, 25 steps: -1.00 dB" in text
    assert "above 1.1x deepinv's: 1\n- digits, box, dps, 25 steps: 1.20x" in text
    for name in ("quality_cost.png", "quality_cost_wall.png"):
        assert (tmp_path / "o" / name).stat().st_size > 0
    summary = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert [b["prior"] for b in summary["runs"]] == ["digits", "textures"]


def test_runs_of_the_same_work_at_other_budgets_are_merged(tmp_path):
    _run(tmp_path / "a", "digits", "box", {"dps": {25: (_side(27.0, 1.0), _side(26.0, 1.0))}})
    _run(tmp_path / "b", "digits", "box", {"dps": {10: (_side(20.0, 1.0), _side(21.0, 1.0))}})
    _run(tmp_path / "c", "digits", "sr4", {"dps": {10: (_side(20.0, 1.0), _side(21.0, 1.0))}})
    runs = quality_cost.collect([tmp_path])
    assert [(r["task"], list(r["results"]["dps"])) for r in runs] == [
        ("box", ["10", "25"]), ("sr4", ["10"]),
    ]  # fmt: skip
    _run(tmp_path / "d", "digits", "box", {"dps": {25: (_side(1.0, 1.0), _side(1.0, 1.0))}})
    with pytest.raises(ValueError, match=r"both hold dps at \['25'\] steps"):
        quality_cost.collect([tmp_path])


def test_no_bench_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sweeps: no bench run"):
        quality_cost.collect([tmp_path])
    with pytest.raises(ValueError, match="does not exist"):
        quality_cost.collect([tmp_path / "missing"])
