"""Offline RL data sets: the bandit's structure, the cache and its card, bad data."""

import dataclasses

import numpy as np
import pytest

from experiments.rl import datasets


def test_the_bandit_has_four_modes_and_their_rewards():
    data = datasets.bandit(4000, seed=0)
    distance = np.linalg.norm(data.actions[:, None] - datasets.BANDIT_MODES[None], axis=-1)
    nearest = distance.argmin(1)
    assert float(distance.min(1).max()) < 0.3
    shares = np.bincount(nearest, minlength=4) / len(nearest)
    assert np.abs(shares - 0.25).max() < 0.03
    for k in range(4):
        assert abs(data.rewards[nearest == k].mean() - datasets.BANDIT_REWARDS[k]) < 0.1
    assert data.terminals.all() and data.state_dim == 1 and data.action_dim == 2
    assert data.card["optimum"] == 5.0 and not data.costs.any()


def test_build_and_load_round_trip_with_a_card(tmp_path):
    built = datasets.build("bandit", 3, tmp_path)
    assert (tmp_path / "bandit-3.json").exists() and not list(tmp_path.glob("*.tmp"))
    loaded = datasets.load("bandit", 3, tmp_path)
    for name in datasets.FIELDS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(built, name))
    assert loaded.card == built.card
    assert not np.array_equal(datasets.load("bandit", 4, tmp_path).actions, built.actions)


def test_bad_data_and_corrupt_caches_are_refused(tmp_path):
    data = datasets.bandit(10)
    wide = dataclasses.replace(data, actions=data.actions * 2)
    with pytest.raises(ValueError, match="violate the action bounds"):
        wide.check()
    nan = dataclasses.replace(data, rewards=np.full(10, np.nan, np.float32))
    with pytest.raises(ValueError, match="rewards contains NaN"):
        nan.check()
    with pytest.raises(ValueError, match="same N"):
        dataclasses.replace(data, actions=data.actions[:5]).check()
    with pytest.raises(ValueError, match="unknown data set"):
        datasets.load("halfcheetah", 0, tmp_path)
    (tmp_path / "bandit-0.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt"):
        datasets.load("bandit", 0, tmp_path)


def test_the_unsafe_bandit_has_a_fifth_costly_mode():
    data = datasets.unsafe_bandit(5000, seed=1)
    inside = np.linalg.norm(data.actions, axis=1) < datasets.UNSAFE_RADIUS
    np.testing.assert_array_equal(data.costs, inside.astype(np.float32))
    assert abs(data.costs.mean() - 0.2) < 0.02
    assert abs(data.rewards[inside].mean() - 6.0) < 0.1
    assert data.card["behaviour_violation_rate"] == pytest.approx(float(data.costs.mean()))


def test_a_cache_of_an_older_format_is_rebuilt_with_a_warning(tmp_path):
    built = datasets.build("bandit", 0, tmp_path)
    old = {k: getattr(built, k) for k in datasets.FIELDS if k != "future_rewards"}
    np.savez(tmp_path / "bandit-0.npz", **old)
    with pytest.warns(UserWarning, match="future_rewards"):
        loaded = datasets.load("bandit", 0, tmp_path)
    np.testing.assert_array_equal(loaded.future_rewards, built.future_rewards)
    with np.load(tmp_path / "bandit-0.npz") as f:
        assert "future_rewards" in f.files
