"""The arm-pose app on tiny settings."""

import pytest

from hydra import compose, initialize_config_module

from experiments.inverse import kinematics


def _cfg(*overrides):
    with initialize_config_module(
        version_base=None, config_module="experiments.configs.kinematics"
    ):
        return compose(
            "kinematics",
            overrides=[
                "train.steps=20", "train.size=256", "poses=2", "samples=2", "steps=5",
                *overrides,
            ],
        )  # fmt: skip


def test_kinematics_app_scores_every_sensor_set(tmp_path):
    metrics = kinematics.run(_cfg(), tmp_path)
    results = metrics["results"]
    assert list(results) == ["unguided", "sensors 4", "sensors 4+2", "sensors 4+2+1"]
    assert [r["sensors"] for r in results.values()] == [0, 1, 2, 3]
    assert results["sensors 4"]["vjp"] == 5  # one VJP per step, however many sensor terms
    for name in ("metrics.json", "table.md", "arms.png", "prior.pt"):
        assert (tmp_path / name).stat().st_size > 0


def test_each_sensor_term_has_its_own_weight(tmp_path):
    """A zero weight on the end effector leaves that sensor set's samples at the prior's
    (same noise), while the other sets still move."""
    results = kinematics.run(_cfg("weights=[1.0,1.0,1.0,0.0]"), tmp_path)["results"]
    for key in ("end_point_error", "joint_error", "angle_error_rad"):
        assert results["sensors 4"][key] == results["unguided"][key]
        assert results["sensors 4+2"][key] != results["unguided"][key]


def test_poses_are_reproducible_and_splits_differ():
    a = kinematics.poses(8, 3, 0.1, 0, 4, draw=1)
    assert a.equal(kinematics.poses(8, 3, 0.1, 0, 4, draw=1))
    assert not a.equal(kinematics.poses(8, 3, 0.1, 0, 4, draw=2))
    assert float(a.abs().max()) <= 1


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("sensor_sets=[[5]]", "sensor_sets"),
        ("sigma_y=0", "sigma_y"),
        ("poses=0", "poses"),
        ("weights=[1.0,1.0]", "weights"),
        ("weights=[1.0,1.0,1.0,-1.0]", "weights"),
    ],
)
def test_kinematics_bad_configs(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        kinematics.run(_cfg(override), tmp_path)
    assert not list(tmp_path.iterdir())
