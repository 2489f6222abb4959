"""The RL app on tiny settings: every method and scale scored, figures written, bad
configs refused before anything is written."""

import dataclasses

import numpy as np
import pytest
import torch

from hydra import compose, initialize_config_module

import guided

from experiments.rl import datasets, saved, steering
from experiments.rl.methods import METHODS, act, sample_actions
from experiments.rl.scoring import standardise
from experiments.rl.training import Trained, train_critic, train_policy


def _cfg(tmp_path, *overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.rl"):
        return compose(
            "rl",
            overrides=[
                f"data_dir={tmp_path / 'data'}", "samples=16", "steps=3", "candidates=2",
                "scales=[0.0,1.0]", "shown_scale=1.0", "policy.steps=20", "critic.steps=20",
                "energy.states=4", "energy.support=2", "energy.steps=5", "energy.batch=2",
                "latency.states=4", "latency.steps=2", "latency.repeats=1",
                *overrides,
            ],
        )  # fmt: skip


def test_rl_app_scores_every_method_and_scale(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    metrics = steering.run(_cfg(tmp_path), out)
    results = metrics["results"]
    assert set(results) == set(METHODS) - {"safe_energy"}  # the default: no unsafe region
    assert set(results["value"]) == {"0", "1"} and set(results["bc"]) == {"0"}
    for by_scale in results.values():
        for r in by_scale.values():
            assert 0 <= r["reward"] <= 5 and 0 <= r["ood"] <= 1
            assert sum(r["modes"]) == pytest.approx(1.0, abs=1e-3)
    assert metrics["data_scores"]["reward"] == pytest.approx(2.375, abs=0.1)
    assert set(metrics["latency_ms"]) == set(results)
    assert all(ms > 0 for ms in metrics["latency_ms"].values())
    for name in ("metrics.json", "table.md", "scales.png", "actions.png"):
        assert (out / name).stat().st_size > 0


def test_the_unsafe_bandit_reports_violations(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    metrics = steering.run(_cfg(tmp_path, "task=unsafe_bandit", "methods=[bc,safe_energy]"), out)
    assert metrics["data_scores"]["violations"] == pytest.approx(0.2, abs=0.02)
    assert set(metrics["results"]["safe_energy"]) == {"0", "1"}
    assert len(metrics["results"]["bc"]["0"]["modes"]) == 5
    assert "violations" in (out / "table.md").read_text()


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
def test_rl_app_evaluates_pendulum_policies_in_gymnasium(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    overrides = ("task=pendulum_expert", "seeds=[0,1]", "episodes=2", "steps=2",
                 "methods=[bc,gaussian_bc,value,select]")  # fmt: skip
    metrics = steering.run(_cfg(tmp_path, *overrides), out)
    results = metrics["results"]
    assert set(results) == {"bc", "gaussian_bc", "value", "select"}
    assert set(results["value"]) == {"0", "1"}
    for by_scale in results.values():
        for r in by_scale.values():
            assert len(r["per_seed"]) == 2 and r["score_std"] >= 0
    assert results["value"]["0"]["per_seed"] == results["bc"]["0"]["per_seed"]
    assert metrics["data_score"] > 90  # the expert's data
    for name in ("metrics.json", "table.md", "scores.png"):
        assert (out / name).stat().st_size > 0


def test_standardised_states_train_and_act_on_the_same_scale(tmp_path):
    data = datasets.pendulum("mixed", episodes=6)
    scaled, observe = standardise(data)
    np.testing.assert_allclose(scaled.states.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(scaled.states.std(0), 1, atol=1e-3)
    np.testing.assert_allclose(observe(data.next_states), scaled.next_states)
    np.testing.assert_array_equal(scaled.actions, data.actions)
    out = tmp_path / "out"
    out.mkdir()
    overrides = ("task=pendulum_expert", "seeds=[0]", "episodes=2", "steps=2",
                 "methods=[bc,noisy_value]", "normalise_states=true")  # fmt: skip
    metrics = steering.run(_cfg(tmp_path, *overrides), out)
    assert set(metrics["results"]) == {"bc", "noisy_value"}


def _settings(cfg):
    return steering._settings(cfg)


def test_value_guidance_at_scale_zero_is_behaviour_cloning(tmp_path):
    cfg = _cfg(tmp_path)
    settings = _settings(cfg)
    data = datasets.load("bandit", 0, tmp_path / "data")
    trained = Trained(train_policy(settings, data), train_critic(settings, data))
    states = torch.zeros(8, 1)
    bc = sample_actions(settings, "bc", 0.0, trained, states, 1)
    value = sample_actions(settings, "value", 0.0, trained, states, 1)
    torch.testing.assert_close(bc, value)
    assert not bc.equal(sample_actions(settings, "value", 30.0, trained, states, 1))
    # a state of the wrong dimension (a 3-dimensional observation for a 1-dimensional state)
    with pytest.raises(ValueError, match="state"):
        sample_actions(settings, "bc", 0.0, trained, torch.zeros(8, 3), 1)
    with pytest.raises(ValueError, match="state"):
        sample_actions(settings, "value", 1.0, trained, torch.zeros(8, 3), 1)
    with pytest.raises(ValueError, match="not trained"):
        sample_actions(settings, "energy", 1.0, trained, states, 1)


def test_return_conditioning_reaches_the_requested_mode(tmp_path):
    """Return-conditioned CFG on the bandit: the best return asks for the best mode, the worst
    for the worst; scale 0 is the unconditional policy (the null embedding)."""
    settings = _settings(_cfg(tmp_path, "policy.steps=800"))
    data = datasets.load("bandit", 0, tmp_path / "data")
    returns = train_policy(settings, data, returns=True)
    trained = Trained(returns, train_critic(settings, data), returns=returns)
    states = torch.zeros(400, 1)
    modes = torch.as_tensor(datasets.BANDIT_MODES, dtype=torch.float32)

    def shares(target, scale):
        targeted = dataclasses.replace(
            settings, returns=dataclasses.replace(settings.returns, target=target)
        )
        with torch.no_grad():
            actions = sample_actions(targeted, "return_cfg", scale, trained, states, 3)
        nearest = torch.cdist(actions, modes).argmin(1)
        return nearest.bincount(minlength=4).float() / len(nearest)

    assert shares(1.0, 1.0)[3] > 0.6  # reward 5
    assert shares(0.0, 1.0)[1] > 0.6  # reward 0
    unconditional = shares(1.0, 0.0)
    assert unconditional.max() < 0.5  # all four modes
    g = torch.Generator().manual_seed(3)
    x_T = guided.initial_noise(returns.schedule, (400, 2), g)
    with torch.no_grad():
        direct = guided.DDPM()(
            returns, x_T, guided.time_grid(settings.steps), generator=g, state=states
        ).clamp(-1, 1)
        ours = sample_actions(settings, "return_cfg", 0.0, trained, states, 3)
    torch.testing.assert_close(ours, direct)


def test_saved_policies_load_and_act_without_hydra(tmp_path):
    """The app saves what it trains; loading it gives the same actions as the trained
    networks, for every method it ran, and refuses what it cannot do."""
    out = tmp_path / "out"
    out.mkdir()
    cfg = _cfg(tmp_path, "methods=[bc,value,energy,select]")
    steering.run(cfg, out)
    policy = saved.load(out / "policy")
    assert set(policy.methods) >= {"bc", "value", "energy", "select", "value_select"}
    assert "noisy_value" not in policy.methods
    settings = _settings(cfg)
    data = datasets.load("bandit", 0, tmp_path / "data")
    states = torch.zeros(6, 1)
    fresh = Trained(train_policy(settings, data), train_critic(settings, data))
    for method in ("bc", "value", "select"):
        torch.testing.assert_close(
            policy.act(states, method, 3.0, seed=5), act(settings, method, 3.0, fresh, states, 5)
        )
    assert policy.act(states.numpy(), "energy", 1.0).shape == (6, 2)
    with pytest.raises(ValueError, match="method must be one of"):
        policy.act(states, "noisy_value")
    with pytest.raises(ValueError, match=r"shape \(B, 1\)"):
        policy.act(torch.zeros(6, 3), "bc")
    with pytest.raises(ValueError, match="finite"):
        policy.act(torch.full((6, 1), float("inf")), "bc")
    with pytest.raises(FileNotFoundError, match="policy.json"):
        saved.load(tmp_path)


def test_saved_environment_policies_keep_their_state_normalisation(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    overrides = ("task=pendulum_expert", "seeds=[1]", "episodes=1", "steps=2",
                 "methods=[bc]", "normalise_states=true")  # fmt: skip
    steering.run(_cfg(tmp_path, *overrides), out)
    policy = saved.load(out / "policy-seed1")
    data = datasets.load("pendulum_expert", 0, tmp_path / "data")
    _, observe = standardise(data)
    raw = data.states[:4]
    expected = act(policy.settings, "bc", 1.0, policy.trained, torch.from_numpy(observe(raw)), 0)
    torch.testing.assert_close(policy.act(raw, "bc", seed=0), expected)
    assert policy.settings.seed == 1


@pytest.mark.parametrize(
    ("override", "match"),
    [("methods=[dql]", "unknown methods"), ("dataset=hopper", "unknown dataset"),
     ("critic.expectile=1.0", "expectile"), ("scales=[-1.0]", "scales"),
     ("candidates=0", "candidates"), ("seeds=[]", "seeds"), ("episodes=0", "episodes"),
     ("returns.dropout=0.0", "returns.dropout"), ("returns.target=2.0", "returns.target")],
)  # fmt: skip
def test_rl_app_bad_configs(tmp_path, override, match):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=match):
        steering.run(_cfg(tmp_path, override), out)
    assert not list(out.iterdir())
