"""The denoising benchmark: the shipped natural prior's one-step denoiser against BM3D on
held-out crops, and the refusal of training photographs."""

import json

import pytest

from hydra import compose, initialize_config_module

from experiments.benchmarks import denoise


def _cfg(*overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.denoise"):
        return compose("denoise", overrides=["threads=1", *overrides])


def test_the_prior_denoises_held_out_crops(tmp_path):
    metrics = denoise.run(_cfg("crops=2", "crop=64", "sigmas=[25]"), tmp_path)
    row = metrics["sigmas"]["25.0"]
    assert row["prior"]["psnr"] > row["noisy"]["psnr"] + 5
    assert row["bm3d"]["psnr"] > row["noisy"]["psnr"] + 5
    assert abs(row["prior_minus_bm3d"] - (row["prior"]["psnr"] - row["bm3d"]["psnr"])) < 1e-4
    assert json.loads((tmp_path / "metrics.json").read_text())["crops"] == 2
    assert "| 25.0 |" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("photographs=[camera]", "training photographs"),
        ("photographs=[lena]", "photographs must be among"),
        ("crops=500", "crops must lie in"),
        ("sigmas=[0]", "sigmas"),
    ],
)
def test_bad_settings_are_refused(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        denoise.run(_cfg(override), tmp_path)
