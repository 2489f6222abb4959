"""The baseline tuning app: it picks the best setting of each grid on training crops, writes
what it chose, and refuses unknown baselines and tasks."""

import pytest

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from experiments.benchmarks import tune_baselines


def _cfg(*overrides):
    with initialize_config_module(
        version_base=None, config_module="experiments.configs.tune_baselines"
    ):
        return compose(
            "tune_baselines",
            overrides=[
                "threads=1", "crop=32", "crops=1", "tasks=[random50]", "sigmas=[0.05]",
                "grids.tv.lam=[0.0001,0.03]", "~grids.pnp_bm3d", "~grids.patch_gmm", *overrides,
            ],
        )  # fmt: skip


def test_the_best_setting_is_chosen_and_written(tmp_path):
    metrics = tune_baselines.run(_cfg(), tmp_path)
    trial = metrics["trials"]["random50/0.05/tv"]
    best = max(range(2), key=trial["psnr"].__getitem__)
    assert trial["best"] == trial["settings"][best]
    written = OmegaConf.load(tmp_path / "tuned.yaml")
    assert written.tv.random50["0.05"] == trial["best"]


@pytest.mark.parametrize(
    ("override", "match"),
    [("tasks=[warp]", "unknown baselines or tasks"), ("+grids.wiener={k: [1]}", "wiener")],
)
def test_unknown_names_are_refused(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        tune_baselines.run(_cfg(override), tmp_path)


def test_a_best_setting_at_the_end_of_its_grid_is_flagged():
    assert tune_baselines.at_edge(0, 3) and tune_baselines.at_edge(4, 5)
    assert not tune_baselines.at_edge(1, 3) and not tune_baselines.at_edge(0, 2)
