"""The RL app on tiny settings: every method and scale scored, figures written, bad
configs refused before anything is written."""

import numpy as np
import pytest

from hydra import compose, initialize_config_module

from experiments import rl


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
    metrics = rl.run(_cfg(tmp_path), out)
    results = metrics["results"]
    assert set(results) == set(rl.METHODS) - {"safe_energy"}  # the default: no unsafe region
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
    metrics = rl.run(_cfg(tmp_path, "task=unsafe_bandit", "methods=[bc,safe_energy]"), out)
    assert metrics["data_scores"]["violations"] == pytest.approx(0.2, abs=0.02)
    assert set(metrics["results"]["safe_energy"]) == {"0", "1"}
    assert len(metrics["results"]["bc"]["0"]["modes"]) == 5
    assert "violations" in (out / "table.md").read_text()


def test_rl_app_evaluates_pendulum_policies_in_gymnasium(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    overrides = ("task=pendulum_expert", "seeds=[0,1]", "episodes=2", "steps=2",
                 "methods=[bc,gaussian_bc,value,select]")  # fmt: skip
    metrics = rl.run(_cfg(tmp_path, *overrides), out)
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
    data = rl.offline.pendulum("mixed", episodes=6)
    scaled, observe = rl.standardise(data)
    np.testing.assert_allclose(scaled.states.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(scaled.states.std(0), 1, atol=1e-3)
    np.testing.assert_allclose(observe(data.next_states), scaled.next_states)
    np.testing.assert_array_equal(scaled.actions, data.actions)
    out = tmp_path / "out"
    out.mkdir()
    overrides = ("task=pendulum_expert", "seeds=[0]", "episodes=2", "steps=2",
                 "methods=[bc,noisy_value]", "normalise_states=true")  # fmt: skip
    metrics = rl.run(_cfg(tmp_path, *overrides), out)
    assert set(metrics["results"]) == {"bc", "noisy_value"}


def test_value_guidance_at_scale_zero_is_behaviour_cloning(tmp_path):
    cfg = _cfg(tmp_path)
    data = rl.offline.load("bandit", 0, tmp_path / "data")
    prior = rl.train_policy(cfg, data)
    critics = {"q": rl.train_critic(cfg, data)}
    states = rl.torch.zeros(8, 1)
    bc = rl.sample_actions(cfg, "bc", 0.0, prior, critics, states, 1)
    guided = rl.sample_actions(cfg, "value", 0.0, prior, critics, states, 1)
    rl.torch.testing.assert_close(bc, guided)
    assert not bc.equal(rl.sample_actions(cfg, "value", 30.0, prior, critics, states, 1))
    # a state of the wrong dimension (a 3-dimensional observation for a 1-dimensional state)
    with pytest.raises(ValueError, match="state"):
        rl.sample_actions(cfg, "bc", 0.0, prior, critics, rl.torch.zeros(8, 3), 1)
    with pytest.raises(ValueError, match="state"):
        rl.sample_actions(cfg, "value", 1.0, prior, critics, rl.torch.zeros(8, 3), 1)


def test_return_conditioning_reaches_the_requested_mode(tmp_path):
    """Return-conditioned CFG on the bandit: the best return asks for the best mode, the worst
    for the worst; scale 0 is the unconditional policy (the null embedding)."""
    cfg = _cfg(tmp_path, "policy.steps=800")
    data = rl.offline.load("bandit", 0, tmp_path / "data")
    critics = {"returns": rl.train_policy(cfg, data, returns=True)}
    states = rl.torch.zeros(400, 1)
    modes = rl.torch.as_tensor(rl.offline.BANDIT_MODES, dtype=rl.torch.float32)

    def shares(target, scale):
        cfg.returns.target = target
        with rl.torch.no_grad():
            actions = rl.sample_actions(cfg, "return_cfg", scale, None, critics, states, 3)
        nearest = rl.torch.cdist(actions, modes).argmin(1)
        return nearest.bincount(minlength=4).float() / len(nearest)

    assert shares(1.0, 1.0)[3] > 0.6  # reward 5
    assert shares(0.0, 1.0)[1] > 0.6  # reward 0
    unconditional = shares(1.0, 0.0)
    assert unconditional.max() < 0.5  # all four modes
    g = rl.torch.Generator().manual_seed(3)
    x_T = rl.guided.initial_noise(critics["returns"].schedule, (400, 2), g)
    with rl.torch.no_grad():
        direct = rl.guided.DDPM()(
            critics["returns"], x_T, rl.guided.time_grid(int(cfg.steps)), generator=g,
            state=states,
        ).clamp(-1, 1)  # fmt: skip
        ours = rl.sample_actions(cfg, "return_cfg", 0.0, None, critics, states, 3)
    rl.torch.testing.assert_close(ours, direct)


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
        rl.run(_cfg(tmp_path, override), out)
    assert not list(out.iterdir())
