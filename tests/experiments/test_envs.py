"""The batched numpy Pendulum is gymnasium's Pendulum-v1; the scripted controller swings up;
the Pendulum data sets are ordered by quality and carry their reference returns."""

import gymnasium as gym
import numpy as np
import pytest

from experiments.rl import datasets, envs


def test_the_batched_pendulum_steps_like_gymnasium():
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=3)
    ours = envs.Pendulum(1, np.random.default_rng(0))
    ours.theta, ours.speed = (np.array([v]) for v in env.unwrapped.state)
    np.testing.assert_allclose(ours.observe()[0], obs, atol=1e-6)
    rng = np.random.default_rng(1)
    for _ in range(envs.PENDULUM_STEPS):
        action = rng.uniform(-1, 1, (1, 1)).astype(np.float32)
        obs, reward, *_ = env.step(2 * action[0])
        our_reward, our_obs = ours.step(action)
        np.testing.assert_allclose(our_obs[0], obs, atol=1e-5)
        assert our_reward[0] == pytest.approx(float(reward), abs=1e-4)


def test_the_swing_up_controller_is_an_expert_in_gymnasium():
    expert = envs.evaluate(envs.swing_up, 10, seed=0)
    rng = np.random.default_rng(0)
    random = envs.evaluate(lambda obs: rng.uniform(-1, 1, (len(obs), 1)), 10, seed=0)
    assert expert.mean() > -250 and random.mean() < -900


def test_evaluate_refuses_bad_actions():
    with pytest.raises(ValueError, match="finite actions"):
        envs.evaluate(lambda obs: np.zeros((len(obs), 2)), 2, seed=0)
    with pytest.raises(ValueError, match="finite actions"):
        envs.evaluate(lambda obs: np.full((len(obs), 1), np.nan), 2, seed=0)


def test_pendulum_data_sets_are_ordered_by_quality():
    returns = {
        level: datasets.pendulum(level, episodes=30).card["behaviour_return"]
        for level in ("random", "medium", "expert", "mixed")
    }
    assert returns["random"] < returns["medium"] < returns["expert"]
    assert returns["random"] < returns["mixed"] < returns["expert"]
    data = datasets.pendulum("expert", episodes=6)
    assert data.states.shape == (1200, 3) and data.actions.shape == (1200, 1)
    assert not data.terminals.any()  # time limits are not terminals
    refs = data.card["references"]
    assert refs["random"] < -1000 and refs["expert"] > -250
    with pytest.raises(ValueError, match="level"):
        datasets.pendulum("novice")


def test_the_reacher_controller_is_an_expert_in_gymnasium():
    expert = envs.evaluate(envs.reach, 6, seed=0, environment="reacher")
    rng = np.random.default_rng(0)
    random = envs.evaluate(lambda o: rng.uniform(-1, 1, (len(o), 2)), 6, 0, "reacher")
    assert expert.mean() > -10 and random.mean() < -35
    with pytest.raises(ValueError, match=r"finite actions \(2, 2\)"):
        envs.evaluate(lambda obs: np.zeros((len(obs), 1)), 2, 0, "reacher")
    with pytest.raises(ValueError, match="unknown environment"):
        envs.evaluate(envs.reach, 2, 0, "hopper")


def test_reacher_data_sets_are_ordered_by_quality():
    data = {level: datasets.reacher(level, episodes=12) for level in datasets.LEVELS}
    returns = {level: d.card["behaviour_return"] for level, d in data.items()}
    assert returns["random"] < returns["medium"] < returns["expert"]
    assert returns["random"] < returns["mixed"] < returns["expert"]
    expert = data["expert"]
    assert expert.states.shape == (600, 10) and expert.actions.shape == (600, 2)
    assert envs.environment_of("reacher_mixed").gym_id == "Reacher-v5"
    np.testing.assert_allclose(expert.actions, envs.reach(expert.states), atol=1e-6)
    refs = expert.card["references"]
    assert refs["random"] < -35 and refs["expert"] > -10


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
def test_cheetah_data_sets_are_ordered_by_quality():
    data = {level: datasets.cheetah(level, episodes=3) for level in datasets.LEVELS}
    returns = {level: d.card["behaviour_return"] for level, d in data.items()}
    assert returns["random"] < returns["medium"] < returns["expert"]
    assert returns["random"] < returns["mixed"] < returns["expert"]
    expert = data["expert"]
    assert expert.states.shape == (3000, 17) and expert.actions.shape == (3000, 6)
    assert envs.environment_of("cheetah_mixed").gym_id == "HalfCheetah-v5"
    policy = datasets.cheetah_policies()["expert"]
    np.testing.assert_allclose(expert.actions, policy(expert.states), atol=1e-6)
    refs = expert.card["references"]
    assert refs["random"] < 0 and refs["expert"] > 3000


@pytest.mark.parametrize("name", ["pendulum_medium", "reacher_mixed"])
def test_future_rewards_average_the_rest_of_each_episode(name):
    env = envs.environment_of(name)
    builder = datasets.pendulum if name.startswith("pendulum") else datasets.reacher
    data = builder(name.split("_")[1], episodes=6)
    rewards = data.rewards.reshape(-1, env.steps, 2 if name == "reacher_mixed" else 6)
    future = data.future_rewards.reshape(rewards.shape)
    # time-major per level: rows (level, step, episode)
    np.testing.assert_allclose(future[:, -1], rewards[:, -1], rtol=1e-5)
    np.testing.assert_allclose(future[:, 0], rewards.mean(1), rtol=1e-4, atol=1e-5)
    returns = rewards.sum(1).mean()
    assert data.card["behaviour_return"] == pytest.approx(float(returns), rel=1e-4)
