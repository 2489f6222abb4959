"""The blind-deblurring app on tiny settings."""

import csv

import pytest

from hydra import compose, initialize_config_module

from experiments.inverse import blind


def _cfg(*overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.blind"):
        return compose(
            "blind", overrides=["images=1", "samples=2", "steps=4", "em.rounds=1", *overrides]
        )


def test_blind_app_writes_scores_and_figure(tmp_path):
    metrics = blind.run(_cfg(), tmp_path)
    summary = metrics["summary"]
    assert set(summary) == {"true_operator", "wrong_operator", "em", "em_fast"}
    assert summary["true_operator"]["error"] == 0.0
    assert summary["wrong_operator"]["error"] > 1.0  # a Dirac against a sigma-1 Gaussian
    assert summary["em"]["nfe"] == 2 * summary["true_operator"]["nfe"]  # one M-step: two samplings
    assert "gap_closed" in summary["em"] and "gap_closed" in summary["em_fast"]
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (tmp_path / "blind.png").stat().st_size > 0
    assert "gap closed" in (tmp_path / "table.md").read_text()


def test_blind_app_estimates_an_unknown_gain(tmp_path):
    metrics = blind.run(
        _cfg("unknown=gain", "gain=0.6", "methods=[true_operator,wrong_operator,em]"), tmp_path
    )
    summary = metrics["summary"]
    assert summary["true_operator"]["error"] == 0.0
    assert summary["wrong_operator"]["error"] == pytest.approx(0.4 / 0.6)
    assert summary["em"]["error"] < summary["wrong_operator"]["error"]
    assert "gain error" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "blind.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("methods=[nope]", "unknown methods"),
        ("sigma_y=0", "sigma_y"),
        ("kernel.size=4", "kernel.size"),
        ("em.rounds=0", "em.rounds"),
        ("em.penalty=-1", "penalty"),
        ("unknown=nope", "unknown must be"),
        ("gain=0", "gain"),
    ],
)
def test_blind_app_bad_configs(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        blind.run(_cfg(override), tmp_path)
    assert not list(tmp_path.iterdir())
