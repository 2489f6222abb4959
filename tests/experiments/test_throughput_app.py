"""The throughput app on tiny settings: every mode restores the same batch, bf16 stays close
to fp32, bad configs are refused before anything is written."""

import json

import pytest

from hydra import compose, initialize_config_module

from experiments.benchmarks import throughput


def _cfg(*overrides):
    with initialize_config_module(
        version_base=None, config_module="experiments.configs.throughput"
    ):
        return compose(
            "throughput",
            overrides=["device=cpu", "images=2", "steps=3", "size=32", "repeats=1", *overrides],
        )


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
def test_modes_restore_the_same_batch_and_are_timed(tmp_path):
    metrics = throughput.run(_cfg("modes=[fp32,bf16,bf16_channels_last]"), tmp_path)
    results = metrics["results"]
    assert metrics["device"].startswith("CPU")
    assert results["fp32"]["deviation_from_first_mode"] == 0
    for mode in ("bf16", "bf16_channels_last"):
        assert 0 < results[mode]["deviation_from_first_mode"] < 0.2
        assert abs(results[mode]["psnr"] - results["fp32"]["psnr"]) < 0.5
    assert all(r["per_minute"] > 0 for r in results.values())
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 3
    assert "bf16_channels_last" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize(
    ("override", "match"),
    [("modes=[fp8]", "unknown modes"), ("size=30", "divisible"), ("device=tpu", "device"),
     ("images=0", "images"), ("sigma_y=-1", "sigma_y")],
)  # fmt: skip
def test_bad_configs_are_refused(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        throughput.run(_cfg(override), tmp_path)
    assert not list(tmp_path.iterdir())
