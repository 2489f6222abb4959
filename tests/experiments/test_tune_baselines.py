"""The baseline tuning app: it picks the best setting of each grid on training crops, writes
what it chose, and refuses unknown baselines and tasks."""

import pytest
import torch

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from experiments.benchmarks import tune_baselines
from experiments.shared.catalogue import edges, merged


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


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
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


def test_a_best_value_at_the_end_of_its_grid_is_flagged():
    grid = {"lam": [1, 2, 3], "scale": [0.5, 1.0], "eta": [0.0, 0.5, 1.0]}
    assert edges(grid, {"lam": 1, "scale": 0.5, "eta": 0.5}) == ["lam"]
    assert edges(grid, {"lam": 2, "scale": 1.0, "eta": 1.0}) == ["eta"]
    assert edges(grid, {"lam": 2, "scale": 0.5, "eta": 0.5}) == []  # two values: no edge


def test_photographs_are_picked_evenly_over_the_training_list():
    from experiments.shared.photographs import Photographs, grid_crops

    images = Photographs("train", crop=32).images
    picked = tune_baselines.training_crops(32, 1, 3)
    assert picked.shape == (3, 1, 32, 32)
    for crop, index in zip(picked, (0, 8, 17), strict=True):  # linspace(0, 17, 3), rounded
        assert any(torch.equal(crop, c.double()) for c in grid_crops(images[index], 32))
    assert tune_baselines.training_crops(32, 1).shape[0] == len(images) == 18
    with pytest.raises(ValueError, match="photographs must lie in"):
        tune_baselines.training_crops(32, 1, 19)


def test_installing_some_tasks_keeps_the_others():
    old = {"tv": {"box": {"0.01": {"lam": 0.1}}, "blur": {"0.01": {"lam": 3.0}}}}
    new = {"tv": {"blur": {"0.01": {"lam": 0.01}, "0.05": {"lam": 0.03}}}, "pnp": {"blur": {}}}
    assert merged(old, new, 3) == {
        "tv": {
            "box": {"0.01": {"lam": 0.1}},
            "blur": {"0.01": {"lam": 0.01}, "0.05": {"lam": 0.03}},
        },
        "pnp": {"blur": {}},
    }
    assert old["tv"]["blur"] == {"0.01": {"lam": 3.0}}  # not modified in place
