"""The restoration app on a tiny setting: scores, figures, the pseudo-inverse baseline, a
peer's loop side by side, and clear errors for bad configs."""

import json

import pytest
import torch

from hydra import compose, initialize_config_module

from experiments.inverse import restore
from experiments.shared import data, tasks


def _cfg(*overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.restore"):
        return compose(
            "restore",
            overrides=["images=2", "samples=2", "steps=4", "threads=1", *overrides],
        )


def test_writes_metrics_table_and_figures(tmp_path):
    cfg = _cfg("tasks=[box,sr4]", "run=[pigdm,ddrm,deepinv_dps]")
    metrics = restore.run(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["tasks"] == metrics["tasks"] and saved["prior"] == "digits"
    for task in ("box", "sr4"):
        results = metrics["tasks"][task]
        assert set(results) == {"pinv", "pigdm", "ddrm", "deepinv_dps"}
        for name in ("pigdm", "ddrm", "deepinv_dps"):
            r = results[name]
            assert {"psnr", "ssim", "psnr_sample", "residual", "nfe", "vjp", "wall_s"} <= set(r)
            assert 0 < r["ssim"] <= 1 and r["psnr"] > 0 and r["nfe"] >= 3
        assert results["ddrm"]["vjp"] == 0 and results["pigdm"]["vjp"] == 4
        assert (tmp_path / f"restore_{task}.png").stat().st_size > 0
    assert "| sr4 | ddrm |" in (tmp_path / "table.md").read_text()


def test_a_method_that_cannot_take_the_operator_is_reported_not_applicable(tmp_path):
    metrics = restore.run(_cfg("tasks=[blur]", "run=[repaint,ddrm]"), tmp_path)
    assert "DDNMPlus" in metrics["tasks"]["blur"]["repaint"]["not applicable"]
    assert "psnr" in metrics["tasks"]["blur"]["ddrm"]
    assert "| blur | repaint | not applicable:" in (tmp_path / "table.md").read_text()


def test_scores_reward_the_truth():
    op = tasks.box_inpainting((1, 8, 8))
    truth = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = op(truth)
    exact = restore.scores(op, truth.repeat_interleave(3, 0), y, truth, 3)
    worse = restore.scores(op, op.pinv(y).repeat_interleave(3, 0), y, truth, 3)
    assert exact["psnr"] >= 80 and exact["residual"] < 1e-6 and exact["ssim"] > 0.99
    assert worse["psnr"] < 20 and worse["residual"] < 1e-6  # fits y, misses the box


def test_tasks_build_the_operators_they_name():
    shape = (1, 16, 16)
    assert tasks.box_inpainting(shape).mask.sum() == 256 - 64
    assert tasks.outpainting(shape).mask.sum() == 64
    assert tasks.super_resolution(shape).out_shape == (1, 4, 4)
    assert 0.2 < float(tasks.random_inpainting(shape).mask.mean()) < 0.4


def test_bad_configs_fail_early(tmp_path):
    with pytest.raises(ValueError, match="unknown methods or tasks"):
        restore.run(_cfg("run=[nope]"), tmp_path)
    with pytest.raises(ValueError, match="prior must be one of"):
        data.held_out("faces", 2)
    with pytest.raises(ValueError, match="images"):
        restore.run(_cfg("images=0"), tmp_path)
    with pytest.raises(ValueError, match="zeta"):  # a bad value stops the run
        restore.run(_cfg("tasks=[box]", "run=[dps]", "methods.dps.sampler.zeta=-1.0"), tmp_path)
    assert not (tmp_path / "metrics.json").exists()
    metrics = restore.run(  # DDRM needs an SVD: reported with the alternatives, run goes on
        _cfg(
            "tasks=[bicubic]",
            "run=[ddrm]",
            "+tasks_available.bicubic._target_=operators.BicubicSR",
            "+tasks_available.bicubic.factor=2",
        ),
        tmp_path,
    )
    reason = metrics["tasks"]["bicubic"]["ddrm"]["not applicable"]
    assert "SVDOperator" in reason and "PiGDM" in reason
