"""The benchmark on tiny settings: both sides of every pair pay the same network
evaluations, batched CFG equals two passes, outputs are written, bad configs refused."""

import csv
import math

import pytest
import torch

from hydra import compose, initialize_config_module

from experiments.benchmarks import bench
from experiments.shared.metrics import non_finite


def _cfg(*overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.bench"):
        return compose(
            "bench",
            overrides=[
                "images=2",
                "steps=[4]",
                "repeats=1",
                "threads=1",
                "settings=catalogue",
                *overrides,
            ],  # the catalogue's settings: tuned ones are for 100 steps, not 4
        )


def test_pairs_pay_equal_network_evaluations_and_outputs_are_written(tmp_path):
    metrics = bench.run(_cfg(), tmp_path)
    assert set(metrics["results"]) == {"dps", "pigdm", "ddrm", "diffpir"}
    assert metrics["steps"] == [4]
    for per_budget in metrics["results"].values():
        row = per_budget["4"]
        assert row["ours"]["nfe"] == row["theirs"]["nfe"] == 4
        assert row["ours"]["psnr"] > 5 and row["theirs"]["psnr"] > 5
        assert 0 < row["ours"]["ssim"] <= 1 and 0 < row["theirs"]["ssim"] <= 1
        assert row["wall_ratio"] > 0
        assert row["ours"]["wall_per_nfe_s"] == pytest.approx(row["ours"]["wall_s"] / 4)
        assert row["ours"]["peak_mib"] >= 0 and row["theirs"]["peak_mib"] >= 0
    dps = metrics["results"]["dps"]["4"]
    assert dps["ours"]["vjp"] == dps["theirs"]["vjp"]
    assert metrics["vjp_floor_s"] > 0 and metrics["guided_step_over_floor"] > 0
    assert metrics["cfg"]["max_difference"] < 1e-4  # the same guidance, batched or not
    with (tmp_path / "bench.csv").open() as f:
        assert len(list(csv.reader(f))) == 5
    for name in ("table.md", "bench.png", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
def test_a_curve_over_budgets_marks_each_sides_best(tmp_path):
    metrics = bench.run(_cfg("steps=[6,2]", "~pairs.dps", "~pairs.diffpir"), tmp_path)
    assert metrics["steps"] == [2, 6]  # sorted
    for per_budget in metrics["results"].values():
        assert set(per_budget) == {"2", "6"}
        for steps, row in per_budget.items():
            assert row["ours"]["nfe"] == row["theirs"]["nfe"] == int(steps)
    for steps, chosen in metrics["best"].items():
        for side in ("ours", "theirs"):
            scores = {p: metrics["results"][p][steps][side]["psnr"] for p in ("pigdm", "ddrm")}
            assert chosen[side] == max(scores, key=scores.get)
    assert metrics["floor_steps"] == 6
    with (tmp_path / "bench.csv").open() as f:
        assert len(list(csv.reader(f))) == 1 + 2 * 2  # header, 2 pairs x 2 budgets
    assert "Best of each side per budget" in (tmp_path / "table.md").read_text()


def test_spread_over_noise_seeds(tmp_path):
    metrics = bench.run(
        _cfg("samples=2", "~pairs.dps", "~pairs.pigdm", "~pairs.diffpir"), tmp_path
    )
    for side in ("ours", "theirs"):
        spread = metrics["results"]["ddrm"]["4"][side]["spread"]
        assert spread["samples"] == 2 and len(spread["psnr_per_seed"]) == 2
        assert spread["psnr_per_seed"][0] != spread["psnr_per_seed"][1]  # other noise
        assert spread["psnr_sample"] == pytest.approx(sum(spread["psnr_per_seed"]) / 2)
        first, second = spread["psnr_per_seed"]  # two seeds: the sample SD is |a - b| / sqrt 2
        assert spread["psnr_sample_ci"] == pytest.approx(1.96 * abs(first - second) / 2)
        assert spread["pixel_std"] > 0
        assert 0 < spread["ssim_sample"] <= 1 and 0 < spread["ssim_of_mean"] <= 1
    table = (tmp_path / "table.md").read_text()
    assert "PSNR of their mean" in table
    a, b = (metrics["results"]["ddrm"]["4"][side]["spread"] for side in ("ours", "theirs"))
    difference = a["psnr_sample"] - b["psnr_sample"]
    interval = math.hypot(a["psnr_sample_ci"], b["psnr_sample_ci"])
    assert f"| 4 | ddrm {a['psnr_sample']:.2f} | ddrm {b['psnr_sample']:.2f} | " in table
    assert f"{difference:+.2f} ± {interval:.2f} |" in table


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
def test_a_run_that_diverges_is_recorded_and_the_bench_goes_on(tmp_path):
    """Our DPS at a step of 1e300 raises FloatingPointError at its first step: its cells say
    so, are never chosen as best, and every other cell (deepinv's DPS, both DDRMs, the mean
    over seeds) is still measured. With floors=false no floor is timed or reported."""
    metrics = bench.run(
        _cfg("steps=[2,4]", "samples=2", "~pairs.pigdm", "~pairs.diffpir",
             "methods.dps_taper.guidance.zeta=1e300", "floors=false"),
        tmp_path,
    )  # fmt: skip
    assert "vjp_floor_s" not in metrics and "guided_step_over_floor" not in metrics
    for steps in ("2", "4"):
        dps, ddrm = metrics["results"]["dps"][steps], metrics["results"]["ddrm"][steps]
        assert "NaN or Inf" in dps["ours"]["diverged"] and dps["ours"]["psnr"] is None
        assert dps["psnr_difference"] is None and dps["wall_ratio"] is None
        assert "spread" not in dps["ours"]
        assert dps["theirs"]["psnr"] > 5 and dps["theirs"]["spread"]["samples"] == 2
        assert dps["theirs"]["wall_s"] > 0 and dps["ours"]["wall_s"] is None  # timed alone
        assert ddrm["ours"]["psnr"] > 5 and ddrm["theirs"]["psnr"] > 5
        assert metrics["best"][steps]["ours"] == "ddrm"  # never the diverged pair
    table = (tmp_path / "table.md").read_text()
    assert "- dps, ours, 2 steps: the guidance (DPS) is NaN or Inf" in table
    theirs = metrics["results"]["dps"]["4"]["theirs"]["spread"]
    assert f"| dps | 4 | 2 | diverged / {theirs['psnr_sample']:.2f} ± " in table
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "floor" not in table


@pytest.mark.slow  # over 4 s: the default suite stays under 10 minutes
def test_the_natural_prior_is_benched_on_its_held_out_crops(tmp_path):
    """The natural prior was trained on 64x64 crops and is benched on 128x128 crops of the
    held-out photographs: operators, initial noise and the floor take the images' size, not
    the prior's training size."""
    metrics = bench.run(
        _cfg("prior=natural", "images=1", "steps=[2]", "~pairs.dps", "~pairs.pigdm",
             "~pairs.diffpir", "task=sr4", "memory=false"),
        tmp_path,
    )  # fmt: skip
    row = metrics["results"]["ddrm"]["2"]
    assert row["ours"]["nfe"] == row["theirs"]["nfe"] == 2
    assert row["ours"]["psnr"] > 10 and row["theirs"]["psnr"] > 10
    assert metrics["vjp_floor_s"] > 0
    assert row["ours"]["peak_mib"] is None and row["memory_ratio"] is None  # memory=false


def test_non_finite_output_is_named_not_clamped_into_a_score():
    x = torch.zeros(3, 1, 4, 4)
    assert non_finite(x) is None
    x[1, 0, 0, 0] = math.inf
    x[2, 0, 1, 1] = math.nan
    assert non_finite(x) == "non-finite output in 2 of 3 rows"


@pytest.mark.parametrize(
    ("override", "match"),
    [("task=blur9", "unknown task"), ("steps=[0]", "steps"), ("sigma_y=-0.1", "sigma_y"),
     ("pairs.dps.theirs=nope", "unknown methods"), ("samples=0", "samples"),
     ("steps=[]", "at least one"), ("steps=[4,4]", "repeat"), ("steps=[4,2.5]", "integers"),
     ("steps=true", "integers"), ("settings=best", "settings must be"),
     ("images=2.5", "images must be an integer"), ("sigma_y=inf", "sigma_y")],
)  # fmt: skip
def test_bad_configs_are_refused(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        bench.run(_cfg(override), tmp_path)
    assert not list(tmp_path.iterdir())
