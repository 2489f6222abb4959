"""The derivative-free guidance app on tiny settings."""

import numpy as np
import pytest

from hydra import compose, initialize_config_module

import priors

from experiments.inverse import black_boxes, blackbox, surrogate


def _cfg(*overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.blackbox"):
        return compose(
            "blackbox",
            overrides=[
                "images=1", "samples=2", "steps=3", "enkg.particles=2",
                "zeroth_order.queries=2", "surrogate.pairs=4", "surrogate.batch=4",
                "surrogate.steps=2", "surrogate.prior_steps=2", "surrogate.width=2",
                "surrogate.features=4", "surrogate.views=1", *overrides,
            ],
        )  # fmt: skip


def test_blackbox_app_scores_costs_and_figures(tmp_path):
    metrics = blackbox.run(_cfg(), tmp_path)
    results = metrics["results"]
    assert set(results) == {"quantize", "jpeg", "ink"}
    assert results["ink"]["dps_twin"] == {"applicable": False}  # no twin for a simulator
    assert results["quantize"]["unguided"]["operator_calls"] == 0
    # zeroth order: (2 q + 1) calls per step; EnKG: N calls per guided step
    assert results["quantize"]["zeroth_order"]["operator_calls"] == 3 * (2 * 2 + 1)
    assert results["jpeg"]["enkg"]["operator_calls"] == 1 * 2  # one step (t = 1/3) in [0, 0.5]
    assert results["quantize"]["dps_twin"]["vjp"] == 3
    # the surrogate never calls the operator while sampling; its training simulated 2 x 4
    surrogate = results["ink"]["surrogate"]
    assert surrogate["operator_calls"] == 0 and surrogate["critic_simulations"] == 8
    assert surrogate["vjp"] == 3
    for task in ("quantize", "jpeg", "ink"):
        assert (tmp_path / f"blackbox_{task}.png").stat().st_size > 0
    assert "n/a" in (tmp_path / "table.md").read_text()


def test_the_surrogate_trains_on_samples_and_their_denoised_estimates():
    """Slot 0 holds the prior's samples, the other slots denoised estimates of the same
    samples (at t <= 0.2: nearer to them than the samples are to each other, not equal)."""
    prior = priors.load("digits")
    slots = surrogate.prior_samples(_cfg("surrogate.views=2", "surrogate.view_t=0.2"), prior)
    assert slots.shape == (4, 3, *prior.shape)
    assert float(slots.abs().max()) <= 1
    for k in (1, 2):
        gap = (slots[:, k] - slots[:, 0]).flatten(1).norm(dim=1)
        assert bool((gap > 0).all())
        spread = (slots[:, 0] - slots[:, 0].roll(1, 0)).flatten(1).norm(dim=1)
        assert float(gap.mean()) < float(spread.mean())


def test_ink_profile_counts_rows_and_columns():
    x = -np.ones((1, 1, 3, 4))
    x[0, 0, 1, 2] = x[0, 0, 2, 2] = 1.0
    assert black_boxes.ink_profile(0.0)(x).tolist() == [[0, 1, 1, 0, 0, 2, 0]]


@pytest.mark.parametrize(
    ("override", "match"),
    [("tasks=[nope]", "unknown tasks"), ("methods=[dps]", "unknown methods"),
     ("enkg.particles=1", "particles"), ("samples=0", "samples"),
     ("surrogate.batch=8", "batch"), ("surrogate.sampler=euler", "sampler"),
     ("surrogate.view_t=0", "view_t")],
)  # fmt: skip
def test_blackbox_app_bad_configs(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        blackbox.run(_cfg(override), tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_simulator_returning_nan_stops_the_run_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(
        black_boxes, "ink_profile", lambda threshold: lambda x: np.full((x.shape[0], 32), np.nan)
    )
    with pytest.raises(ValueError, match="NaN"):
        blackbox.run(_cfg("tasks=[ink]"), tmp_path)
    assert not list(tmp_path.iterdir())
