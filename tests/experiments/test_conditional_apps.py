"""The conditional-guidance sweep and the attention analysis apps on tiny settings."""

import csv
import math

import pytest
import torch

from hydra import compose, initialize_config_module

from experiments.generation import attention, conditional


def _cfg(module, name, *overrides):
    with initialize_config_module(version_base=None, config_module=module):
        return compose(name, overrides=list(overrides))


def _conditional(*overrides):
    return _cfg(
        "experiments.configs.conditional",
        "conditional",
        "samples=20",
        "steps=3",
        "cfg_scales=[0,3]",
        "apg_scales=[1,3]",
        "pag_scales=[0,3]",
        "auto_scales=[1,2]",
        "cfgpp_scales=[0,1]",
        "classifier_scales=[0,10]",
        "safety_scales=[0,10]",
        "sag_scales=[0,0.5]",
        "inpaint.images=2",
        "inpaint.steps=3",
        "inpaint.scales=[3.0]",
        *overrides,
    )


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
def test_conditional_sweeps_write_scores_and_figures(tmp_path):
    metrics = conditional.run(_conditional(), tmp_path)
    rows = {(r["sweep"], r["scale"]): r for r in metrics["rows"] if r["sweep"] != "data"}
    assert rows[("cfg", 3.0)]["agreement"] > rows[("cfg", 0.0)]["agreement"]
    assert rows[("cfgpp", 1.0)]["nfe"] == rows[("cfg", 3.0)]["nfe"]  # two passes per step
    assert rows[("cfgpp", 1.0)]["agreement"] > rows[("cfgpp", 0.0)]["agreement"]
    assert rows[("apg", 3.0)]["nfe"] == rows[("cfg", 3.0)]["nfe"]  # two passes per step
    assert rows[("apg", 1.0)]["nfe"] == rows[("cfg", 3.0)]["nfe"] // 2  # scale 1: one pass
    assert rows[("pag", 3.0)]["nfe"] == rows[("cfg", 3.0)]["nfe"]  # two passes per step
    assert rows[("pag", 0.0)]["nfe"] == rows[("cfg", 3.0)]["nfe"] // 2  # scale 0: one pass
    assert rows[("pag", 0.0)]["agreement"] == rows[("apg", 1.0)]["agreement"]  # conditional
    assert rows[("pag_cfg", 3.0)]["nfe"] == 3 * rows[("cfg", 3.0)]["nfe"] // 2  # three passes
    assert rows[("pag_cfg", 0.0)]["agreement"] == rows[("cfg", 3.0)]["agreement"]  # CFG at 3
    assert rows[("auto", 2.0)]["nfe"] == rows[("cfg", 3.0)]["nfe"]  # two passes per step
    assert rows[("auto", 1.0)]["agreement"] == rows[("pag", 0.0)]["agreement"]  # the prior
    assert rows[("classifier", 10.0)]["agreement"] > rows[("classifier", 0.0)]["agreement"]
    assert rows[("safety", 10.0)]["forbidden_rate"] <= rows[("safety", 0.0)]["forbidden_rate"]
    assert rows[("sag", 0.5)]["nfe"] == 2 * rows[("sag", 0.0)]["nfe"]
    assert rows[("sag_cfg", 0.5)]["nfe"] == 2 * rows[("sag_cfg", 0.0)]["nfe"]
    assert rows[("sag_cfg", 0.0)]["agreement"] == rows[("cfg", 3.0)]["agreement"]
    inpaint = rows[("inpaint", 3.0)]
    assert 0 <= inpaint["agreement"] <= 1 and inpaint["vjp"] == 3
    assert 0 <= inpaint["plausible_pairs"] <= 20 and "agreement_plausible" in inpaint
    data = next(r for r in metrics["rows"] if r["sweep"] == "data")
    assert math.isfinite(data["fd"]) and data["fd"] >= 0
    assert data["samples"] == len(conditional.Scorer().x_test) // 2  # the other held-out half
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(metrics["rows"])
    for name in (
        "curves",
        "samples_cfg",
        "samples_apg",
        "samples_pag",
        "samples_pag_cfg",
        "samples_auto",
        "samples_cfgpp",
        "samples_safety",
        "samples_sag",
        "samples_sag_cfg",
        "samples_inpaint",
    ):
        assert (tmp_path / f"{name}.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("sweeps=[nope]", "unknown sweeps"),
        ("forbidden=12", "forbidden"),
        ("cfg_scales=[]", "cfg_scales"),
        ("apg_scales=[.inf]", "apg_scales"),
        ("apg.eta=nan", "eta"),
        ("pag_scales=[-1]", "pag_scales"),
        ("auto_scales=[-1]", "auto_scales"),
        ("auto.weak=textures", "shape"),
        ("pag.layers=[mid.cross]", "self-attention"),
        ("cfgpp_scales=[1.5]", "cfgpp_scales"),
        ("samples=3", "samples"),
        ("inpaint.plausible=0", "plausible"),
        ("sag_cfg_scale=.nan", "sag_cfg_scale"),
        ("pag_cfg_scale=.inf", "pag_cfg_scale"),
    ],
)
def test_conditional_bad_configs(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        conditional.run(_conditional(override), tmp_path)


def test_self_statistics_limits():
    n, side = 16, 16
    uniform = torch.full((1, 2, n, n), 1.0 / n)
    saliency, distance, entropy = attention.self_statistics(uniform, side)
    assert entropy == pytest.approx(1.0) and saliency.shape == (1, side, side)
    torch.testing.assert_close(saliency, torch.ones(1, side, side))
    own = torch.eye(n).expand(1, 2, n, n)
    assert attention.self_statistics(own, side)[1:] == (0.0, pytest.approx(0.0, abs=1e-6))
    assert distance > 0


def test_attention_app_writes_figures(tmp_path):
    cfg = _cfg("experiments.configs.attention", "attention", "steps=4", "times=2", "digits=[3]")
    metrics = attention.run(cfg, tmp_path)
    assert set(metrics["self_attention"]) == {"down", "mid", "up"}
    assert len(metrics["t"]) == 2 and metrics["t"][0] > metrics["t"][1]
    for name in ("attention_self", "attention_cross", "attention_stats"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    with pytest.raises(ValueError, match="times"):
        attention.run(
            _cfg("experiments.configs.attention", "attention", "steps=2", "times=3"), tmp_path
        )
