"""The benchmark on tiny settings: both sides of every pair pay the same network
evaluations, batched CFG equals two passes, outputs are written, bad configs refused."""

import csv

import pytest

from hydra import compose, initialize_config_module

from experiments.benchmarks import bench


def _cfg(*overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.bench"):
        return compose(
            "bench", overrides=["images=2", "steps=4", "repeats=1", "threads=1", *overrides]
        )


def test_pairs_pay_equal_network_evaluations_and_outputs_are_written(tmp_path):
    metrics = bench.run(_cfg(), tmp_path)
    assert set(metrics["results"]) == {"dps", "pigdm", "ddrm", "diffpir"}
    for row in metrics["results"].values():
        assert row["ours"]["nfe"] == row["theirs"]["nfe"] == 4
        assert row["ours"]["psnr"] > 5 and row["theirs"]["psnr"] > 5
        assert row["wall_ratio"] > 0
        assert row["ours"]["peak_mib"] >= 0 and row["theirs"]["peak_mib"] >= 0
    assert metrics["results"]["dps"]["ours"]["vjp"] == metrics["results"]["dps"]["theirs"]["vjp"]
    assert metrics["vjp_floor_s"] > 0 and metrics["guided_step_over_floor"] > 0
    assert metrics["cfg"]["max_difference"] < 1e-4  # the same guidance, batched or not
    with (tmp_path / "bench.csv").open() as f:
        assert len(list(csv.reader(f))) == 5
    for name in ("table.md", "bench.png", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 0


def test_spread_over_noise_seeds(tmp_path):
    metrics = bench.run(
        _cfg("samples=2", "~pairs.dps", "~pairs.pigdm", "~pairs.diffpir"), tmp_path
    )
    for side in ("ours", "theirs"):
        spread = metrics["results"]["ddrm"][side]["spread"]
        assert spread["samples"] == 2 and len(spread["psnr_per_seed"]) == 2
        assert spread["psnr_per_seed"][0] != spread["psnr_per_seed"][1]  # other noise
        assert spread["psnr_sample"] == pytest.approx(sum(spread["psnr_per_seed"]) / 2)
        assert spread["pixel_std"] > 0
    assert "PSNR of their mean" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize(
    ("override", "match"),
    [("task=blur9", "unknown task"), ("steps=0", "steps"), ("sigma_y=-0.1", "sigma_y"),
     ("pairs.dps.theirs=nope", "unknown methods"), ("samples=0", "samples")],
)  # fmt: skip
def test_bad_configs_are_refused(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        bench.run(_cfg(override), tmp_path)
    assert not list(tmp_path.iterdir())
