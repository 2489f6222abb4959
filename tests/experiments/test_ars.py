"""ARS: it learns, its snapshots round-trip through safetensors, bad files are refused, and
the shipped HalfCheetah snapshots are an expert and a medium policy."""

import numpy as np
import pytest

from experiments.rl import datasets, envs, random_search


def _returns(policy, episodes=2, steps=200):
    env = envs.ENVIRONMENTS["cheetah"]
    vector = envs.vector(env.gym_id, episodes)
    weights = np.broadcast_to(policy.weights, (episodes, *policy.weights.shape))
    out = random_search.rollout(
        vector, weights, policy.mean, policy.std, steps, list(range(episodes))
    )
    vector.close()
    return out[0]


def test_ars_improves_a_halfcheetah_policy_from_zero():
    env = envs.ENVIRONMENTS["cheetah"]
    snapshots = random_search.ars(
        env.gym_id, env.state_dim, env.action_dim, steps=100, iterations=6, seed=0,
        directions=8, top=4, step_size=0.05, evaluate_every=3, evaluate_episodes=2,
    )  # fmt: skip
    assert len(snapshots) == 6 and snapshots.weights.shape == (6, 6, 17)
    assert snapshots.mean.shape == snapshots.std.shape == (6, 17)
    assert np.isnan(snapshots.returns[[0, 1, 3, 4]]).all()
    np.testing.assert_array_equal(snapshots.env_steps, 1600 * np.arange(1, 7))
    zero = random_search.LinearPolicy(np.zeros((6, 17)), np.zeros(17), np.ones(17))
    # 100 steps of standing still earn ~0; ARS has learned to move forwards
    assert abs(_returns(zero, steps=100).mean()) < 1
    assert snapshots.returns[-1] > 5
    with pytest.raises(ValueError, match="top <= directions"):
        random_search.ars(env.gym_id, 17, 6, 10, 1, directions=2, top=3)


def test_snapshots_round_trip_and_bad_files_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    snapshots = random_search.Snapshots(
        weights=rng.standard_normal((3, 2, 4)), mean=rng.standard_normal((3, 4)),
        std=rng.random((3, 4)) + 0.1, returns=np.array([np.nan, np.nan, 7.0]),
        env_steps=np.array([10, 20, 30]),
    )  # fmt: skip
    path = random_search.save(snapshots, tmp_path / "p.safetensors", {"seed": 3})
    loaded, card = random_search.load(path)
    assert card == {"seed": 3} and not list(tmp_path.glob("*.tmp"))
    for name in ("weights", "mean", "std", "returns", "env_steps"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(snapshots, name))
    obs = rng.standard_normal((5, 4))
    np.testing.assert_allclose(loaded.policy(2)(obs), snapshots.policy(2)(obs))
    with pytest.raises(FileNotFoundError, match="experiments.rl.ars"):
        random_search.load(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a valid ARS snapshot file"):
        random_search.load(tmp_path / "bad.safetensors")
    short = random_search.Snapshots(**{**snapshots.__dict__, "returns": np.zeros(2)})
    with pytest.raises(ValueError, match="returns has shape"):
        random_search.load(random_search.save(short, tmp_path / "short.safetensors", {}))


def test_the_shipped_snapshots_give_an_expert_and_a_medium_policy():
    snapshots, card = random_search.load()
    assert card["environment"] == "cheetah" and len(snapshots) == card["iterations"]
    policies = datasets.cheetah_policies()
    expert = envs.evaluate(policies["expert"], 2, 0, "cheetah")
    medium = envs.evaluate(policies["medium"], 2, 0, "cheetah")
    assert expert.min() > 3000 and 800 < medium.mean() < 0.6 * expert.mean()
    # brittle: the mean of expert and uniform random actions (the expert's times 2/3) is poor
    damped = envs.evaluate(lambda obs: 2 / 3 * policies["expert"](obs), 2, 0, "cheetah")
    assert damped.mean() < 0.3 * expert.mean()
