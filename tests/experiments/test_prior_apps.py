"""The evaluation and texture-synthesis apps on small settings."""

import json

import pytest

from hydra import compose, initialize_config_module

from experiments.generation import synthesize
from experiments.training import evaluate_priors


def _cfg(module, name, overrides):
    with initialize_config_module(version_base=None, config_module=module):
        return compose(name, overrides=overrides)


def test_evaluate_priors_writes_metrics_and_figures(tmp_path):
    cfg = _cfg(
        "experiments.configs.evaluate",
        "evaluate_priors",
        ["digits.samples=10", "textures.samples=3", "steps=4"],
    )
    metrics = evaluate_priors.run(cfg, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    for name in ("digits", "textures"):
        assert 0 <= metrics[name]["agreement"] <= 1
        assert (tmp_path / f"samples_{name}.png").stat().st_size > 0
    bad = _cfg("experiments.configs.evaluate", "evaluate_priors", ["steps=0"])
    with pytest.raises(ValueError, match="positive"):
        evaluate_priors.run(bad, tmp_path)


def test_synthesize_writes_a_larger_texture(tmp_path):
    cfg = _cfg("experiments.configs.synthesize", "synthesize", ["factor=2", "steps=3"])
    metrics = synthesize.run(cfg, tmp_path)
    assert metrics["size"] == 64 and abs(sum(metrics["tile_votes"].values()) - 1) < 1e-6
    assert (tmp_path / "texture_brick.png").stat().st_size > 0
    bad = _cfg("experiments.configs.synthesize", "synthesize", ["texture=marble"])
    with pytest.raises(ValueError, match="texture must be one of"):
        synthesize.run(bad, tmp_path)
