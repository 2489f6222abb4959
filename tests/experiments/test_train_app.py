"""The training app: a killed run resumes to the same weights; exports load in one call."""

from pathlib import Path

import pytest
import torch

from hydra import compose, initialize_config_module

import priors

from experiments.training.train import train

TINY = [
    "network.channels=[8,16]",
    "network.attention=[false,true]",
    "network.blocks=1",
    "network.heads=2",
    "network.context_dim=8",
    "network.class_tokens=2",
    "batch_size=8",
    "warmup=2",
    "checkpoint_every=3",
    "progress=false",
    "device=cpu",
]


def _cfg(*overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.train"):
        return compose("train", overrides=["prior=digits", *TINY, *overrides])


def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path):
    straight = tmp_path / "straight"
    straight.mkdir()
    metrics = train(_cfg("steps=6"), straight)
    assert metrics["steps"] == 6
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    train(_cfg("steps=3"), resumed)  # "killed" after 3 steps (its checkpoint is at 3)
    (resumed / "digits.safetensors").unlink()
    train(_cfg("steps=6"), resumed)  # the same command again continues from step 3
    a = priors.weights.read(straight / "digits.safetensors")
    b = priors.weights.read(resumed / "digits.safetensors")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    card = (straight / "digits.md").read_text()
    assert "steps=6" in card and "mse_wiener" in card
    assert not list(straight.glob("*.tmp"))


def test_bad_training_values_raise(tmp_path: Path):
    with pytest.raises(ValueError, match="ema"):
        train(_cfg("ema=1.5", "steps=1"), tmp_path)
    with pytest.raises(ValueError, match="positive"):
        train(_cfg("steps=0"), tmp_path)


@pytest.mark.parametrize("name", ["digits", "textures"])
def test_shipped_priors_beat_the_wiener_filter_on_held_out_data(name):
    from experiments.shared.data import Digits, Textures
    from experiments.training.train import evaluate_denoiser

    data = Digits if name == "digits" else Textures
    result = evaluate_denoiser(priors.load(name), data("train"), data("test"), seed=1)
    for sigma, row in result["denoising_mse"].items():
        assert row["mse_prior"] < row["mse_wiener"], (sigma, row)
