"""The method tuning app: it keeps the best setting of each grid on training images (never the
held-out ones), compares settings on the same draws, installs what it chose without losing
what other runs chose, bounds every method's trials alike, and the bench restores with the
installed settings."""

import math

from unittest import mock

import pytest
import torch

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

import guided
import operators
import priors

from experiments.benchmarks import bench, tune_methods
from experiments.shared import catalogue
from experiments.shared.build import build, build_method
from experiments.shared.data import DATA, held_out, tuning


def _cfg(*overrides):
    with initialize_config_module(
        version_base=None, config_module="experiments.configs.tune_methods"
    ):
        cfg = compose(
            "tune_methods",
            overrides=["images=2", "steps=[3]", "threads=1", *overrides],
        )
    keep = {"dps_taper": {"guidance": {"zeta": [30.0, 300.0, 3000.0]}},
            "ddrm": {"sampler": {"eta": [0.0, 1.0]}}}  # fmt: skip
    with open_dict(cfg):
        cfg.grids = OmegaConf.create(keep)
    return cfg


def test_the_best_setting_is_chosen_written_and_reproduced(tmp_path):
    cfg = _cfg()
    metrics = tune_methods.run(cfg, tmp_path)
    trial = metrics["trials"]["dps_taper"]
    scores = [s["psnr"] for s in trial["scores"]]
    assert len(scores) == 3 and len(set(scores)) == 3  # the settings made a difference
    best = trial["settings"][scores.index(max(scores))]
    assert trial["best"] == best
    written = OmegaConf.to_container(OmegaConf.load(tmp_path / "tuned.yaml"))
    assert written["dps_taper"]["digits"]["box"]["0.05"] == catalogue.nested(best)
    assert written["ddrm"]["digits"]["box"]["0.05"]["sampler"]["eta"] in (0.0, 1.0)
    assert all(s["nfe"] == 3 for t in metrics["trials"].values() for s in t["scores"])
    # the chosen setting, rebuilt from what was written, restores the same images exactly
    prior = priors.load("digits")
    truth = tuning("digits", 2)
    op = build(cfg.tasks_available.box, in_shape=tuple(prior.shape))
    g = torch.Generator().manual_seed(0)
    y = operators.GaussianNoise(0.05)(op(truth.float()), g)
    node, settings = catalogue.tuned_method(
        cfg.methods, written, "dps_taper", "digits", "box", 0.05
    )
    assert settings == catalogue.nested(best)
    again = tune_methods.trial(build_method(node, prior, op=op, y=y, sigma_y=0.05), prior,
                               truth, 3, 0)  # fmt: skip
    assert again["psnr"] == pytest.approx(max(scores), abs=1e-9)
    assert "dps_taper" in (tmp_path / "table.md").read_text()


def test_installing_keeps_what_other_runs_chose(tmp_path, monkeypatch):
    path = tmp_path / "tuned.yaml"
    monkeypatch.setattr(tune_methods, "CATALOGUE", path)
    tune_methods.run(_cfg("install=true"), tmp_path / "box")
    tune_methods.run(_cfg("install=true", "task=random"), tmp_path / "random")
    installed = catalogue.installed(path)
    assert set(installed["dps_taper"]["digits"]) == {"box", "random"}
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert header[-1] == f"#   {tune_methods.COMMAND}"  # outside Hydra: the bare command
    assert not (tmp_path / "none").exists()


def test_a_method_that_does_not_take_the_operator_is_skipped(tmp_path):
    cfg = _cfg("task=phase", "+tasks_available.phase._target_=operators.PhaseRetrieval")
    with open_dict(cfg):
        cfg.grids = OmegaConf.create({"ddrm": {"sampler": {"eta": [0.0, 1.0]}}})
    metrics = tune_methods.run(cfg, tmp_path)
    assert "SVD" in metrics["trials"]["ddrm"]["skipped"]
    assert metrics["tuned"] == {}


@pytest.mark.parametrize(
    ("grids", "match"),
    [({"nope": {"sampler": {"eta": [0.0]}}}, "unknown method 'nope'"),
     ({"ddrm": {"sampler": {"etta": [0.0]}}}, "no setting sampler.etta"),
     ({"ddrm": {"guidance": {"weight": [1.0]}}}, "no setting guidance"),
     ({"ddrm": {"sampler": {"eta": 0.5}}}, "non-empty list"),
     ({"ddrm": {"sampler": {"eta": []}}}, "non-empty list"),
     ({"ddrm": {"sampler": {"y": [0.0]}}}, "no setting sampler.y"),
     ({"ddrm": {"sampler": {"eta": [0.0, 0.1, 0.2, 0.3, 0.4], "eta_b": [0.1, 0.2, 0.3, 0.4, 1]}}},
      "25 combinations, more than max_trials=20"),
     ({}, "no method")],
)  # fmt: skip
def test_bad_grids_are_refused_before_anything_runs(tmp_path, grids, match):
    cfg = _cfg()
    with open_dict(cfg):
        cfg.grids = OmegaConf.create(grids)
    with pytest.raises(ValueError, match=match):
        tune_methods.run(cfg, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("override", "match"), [("split=test", "split must be"), ("scored=0", "scored")]
)
def test_bad_splits_are_refused_before_anything_runs(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        tune_methods.run(_cfg(override), tmp_path)
    assert not list(tmp_path.iterdir())


def _same(a, b):
    """Which rows of ``a`` equal some row of ``b``."""
    return ((a[:, None] - b[None]).flatten(2).abs().amax(-1) == 0).any(1)


def test_tuning_images_are_never_held_out_images():
    for prior in ("digits", "textures"):
        assert not bool(_same(tuning(prior, 16), held_out(prior, 64)).any())


def test_a_validation_run_says_so(tmp_path):
    metrics = tune_methods.run(_cfg("split=validation"), tmp_path)
    assert metrics["split"] == "validation"
    assert "2 validation images" in (tmp_path / "table.md").read_text()


def test_validation_images_are_held_out_images_the_bench_does_not_score():
    for prior in ("digits", "textures"):
        split = DATA[prior]("test").evaluation()[0].double()
        for scored in (8, 16):
            tuned = tuning(prior, 12, "validation", scored)
            assert bool(_same(tuned, split).all())  # held out from the prior's training
            assert not bool(_same(tuned, held_out(prior, scored)).any())
    n = len(DATA["digits"]("test").evaluation()[0])
    with pytest.raises(ValueError, match=f"{n - 16} held-out images are not scored"):
        tuning("digits", n, "validation", 16)
    with pytest.raises(ValueError, match="split must be"):
        tuning("digits", 4, "test")


def test_the_bench_restores_with_the_installed_settings(tmp_path):
    with initialize_config_module(version_base=None, config_module="experiments.configs.bench"):
        cfg = compose("bench", overrides=[
            "images=2", "steps=[3]", "repeats=1", "threads=1", "~pairs.dps", "~pairs.pigdm",
            "~pairs.diffpir",
        ])  # fmt: skip
    with open_dict(cfg):
        cfg.tuned = OmegaConf.create(
            {"ddrm": {"digits": {"box": {"0.05": {"sampler": {"eta": 0.0, "eta_b": 0.5}}}}}}
        )
    for name in ("tuned", "by_hand"):
        (tmp_path / name).mkdir()
    tuned = bench.run(cfg, tmp_path / "tuned")["results"]["ddrm"]["3"]
    with open_dict(cfg):
        cfg.methods.ddrm.sampler.eta, cfg.methods.ddrm.sampler.eta_b = 0.0, 0.5
        cfg.settings = "catalogue"
    by_hand = bench.run(cfg, tmp_path / "by_hand")["results"]["ddrm"]["3"]
    assert tuned["ours"]["settings"] == {"sampler": {"eta": 0.0, "eta_b": 0.5}}
    assert by_hand["ours"]["settings"] is None
    assert tuned["ours"]["psnr"] == by_hand["ours"]["psnr"]
    assert tuned["theirs"]["settings"] is None  # deepinv's DDRM was not tuned here
    assert "none tuned for this prior and task" in (tmp_path / "tuned" / "table.md").read_text()


def test_settings_tuned_at_one_noise_level_serve_the_nearest():
    methods = OmegaConf.create({"m": {"sampler": {"_target_": "guided.DDRM", "_partial_": True}}})
    tuned = {"m": {"digits": {"box": {"0.01": {"sampler": {"eta": 0.1}},
                                      "0.1": {"sampler": {"eta": 0.9}}}}}}  # fmt: skip
    for sigma_y, eta in ((0.001, 0.1), (0.02, 0.1), (0.05, 0.9), (1.0, 0.9)):
        node, _ = catalogue.tuned_method(methods, tuned, "m", "digits", "box", sigma_y)
        assert node.sampler.eta == eta
    node, settings = catalogue.tuned_method(methods, tuned, "m", "digits", "sr4", 0.05)
    assert settings is None and "eta" not in node.sampler


def test_the_recorded_command_reruns_the_job(monkeypatch):
    """A multirun job's overrides as Hydra records them (``install=True``, deletions as
    ``~key=null``) become a command a shell runs again the same way."""
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig

    task = ["prior=digits", "task=box", "install=True", "~grids.ddrm=null", "steps=[25]"]
    found = SimpleNamespace(overrides=SimpleNamespace(task=task))
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: found))
    assert catalogue.this_command("python -m app") == (
        "python -m app prior=digits task=box '~grids.ddrm' 'steps=[25]' install=true"
    )


def test_a_diverged_setting_is_never_chosen(tmp_path, monkeypatch):
    """A run that diverges scores NaN, which max() would keep if it came first."""
    real = tune_methods.trial
    calls = []

    def diverging_first(method, *args):
        calls.append(1)
        score = real(method, *args)
        return score | {"psnr": math.nan} if len(calls) == 1 else score

    monkeypatch.setattr(tune_methods, "trial", diverging_first)
    metrics = tune_methods.run(_cfg(), tmp_path)
    assert metrics["trials"]["dps_taper"]["best"] != {"guidance.zeta": 30.0}  # the NaN one
    monkeypatch.setattr(tune_methods, "trial", lambda *a: real(*a) | {"psnr": math.nan})
    metrics = tune_methods.run(_cfg(), tmp_path / "all")
    assert metrics["trials"]["dps_taper"] == {"skipped": "every setting diverged (no finite PSNR)"}
    assert metrics["tuned"] == {}


def test_a_setting_that_raises_is_recorded_and_the_others_still_run(tmp_path):
    """A DPS step of 1e300 overflows: the guidance raises FloatingPointError. That trial
    scores NaN with its reason, and the sweep goes on to choose among the others."""
    cfg = _cfg()
    with open_dict(cfg):
        cfg.grids = OmegaConf.create({"dps_taper": {"guidance": {"zeta": [1e300, 300.0]}}})
    metrics = tune_methods.run(cfg, tmp_path)
    first, second = metrics["trials"]["dps_taper"]["scores"]
    assert math.isnan(first["psnr"]) and "NaN or Inf" in first["diverged"]
    assert math.isfinite(second["psnr"]) and "diverged" not in second
    assert metrics["trials"]["dps_taper"]["best"] == {"guidance.zeta": 300.0}


@pytest.mark.parametrize(
    ("grid", "bound", "methods"),
    [
        ("wide", 20, {"dps_taper", "deepinv_dps", "ddrm", "deepinv_ddrm"}),
        ("compact", 12, {"dps_taper", "deepinv_dps", "ddrm", "deepinv_ddrm"}),
        ("flow", 6, {"flowdps"}),
        ("latent", 10, {"latent_dps_taper", "psld_taper"}),
    ],
)
def test_the_shipped_grids_are_valid_and_within_their_bound(grid, bound, methods):
    """Each shipped grid names catalogue methods and settings their targets take, and every
    method of it stays within the bound its header states (ours and deepinv's alike)."""
    with initialize_config_module(
        version_base=None, config_module="experiments.configs.tune_methods"
    ):
        cfg = compose("tune_methods", overrides=[f"grids={grid}", f"max_trials={bound}"])
    searched = tune_methods.grids(cfg)
    assert methods <= set(searched)
    assert all(1 < len(settings) <= bound for _, settings in searched.values())


@pytest.mark.slow  # over 4 s each: the grids' validity is checked in the default suite above
@pytest.mark.parametrize(
    ("grid", "bound", "prior"), [("flow", 6, "natural-flow"), ("latent", 10, "natural-latent")]
)
def test_the_flow_and_latent_grids_run_on_their_priors(tmp_path, grid, bound, prior):
    """The grids for the flow and latent priors name catalogue methods and settings within
    the bound their headers state, and every setting restores on the prior it is written for
    (one crop, two steps: each trial finishes with a finite PSNR)."""
    with initialize_config_module(
        version_base=None, config_module="experiments.configs.tune_methods"
    ):
        cfg = compose(
            "tune_methods",
            overrides=[f"grids={grid}", f"max_trials={bound}", f"prior={prior}", "task=sr4",
                       "images=1", "steps=[2]", "split=validation", "scored=2", "threads=1"],
        )  # fmt: skip
    searched = tune_methods.grids(cfg)
    assert all(1 < len(settings) <= bound for _, settings in searched.values())
    trials = tune_methods.run(cfg, tmp_path)["trials"]
    assert set(trials) == set(searched)
    for name, t in trials.items():
        assert len(t["scores"]) == len(searched[name][1]), name
        assert all(math.isfinite(s["psnr"]) for s in t["scores"]), name


@pytest.mark.slow  # over 4 s: the default suite stays under 10 minutes
def test_several_seeds_score_a_setting_by_its_mean_over_them(tmp_path):
    """With seeds=2 each setting's PSNR is the mean of its two seeds' PSNRs, the first of
    which is the single-seed trial's (the same draws), and the choice follows the mean."""
    one = tune_methods.run(_cfg(), tmp_path / "one")["trials"]["dps_taper"]
    two = tune_methods.run(_cfg("seeds=2"), tmp_path / "two")["trials"]["dps_taper"]
    for single, both in zip(one["scores"], two["scores"], strict=True):
        first, second = both["psnr_per_seed"]
        assert first == pytest.approx(single["psnr"], abs=1e-9)
        assert second != pytest.approx(first, abs=1e-6)  # another seed, other noise
        assert both["psnr"] == pytest.approx((first + second) / 2, abs=1e-9)
        assert both["nfe"] == 3  # per sample, not summed over the seeds
    means = [s["psnr"] for s in two["scores"]]
    assert two["best"] == two["settings"][means.index(max(means))]
    assert "2 noise seed(s)" in (tmp_path / "two" / "table.md").read_text()
    with pytest.raises(ValueError, match="seeds"):
        tune_methods.run(_cfg("seeds=0"), tmp_path / "zero")


@pytest.mark.filterwarnings("ignore::guided.DivergenceWarning")  # 3 steps
def test_the_time_grid_is_a_setting_that_reaches_the_run(tmp_path):
    """``grid`` is tuned like any setting, the trial runs on that grid (the steps it gives the
    sampler are the grid's), and a kind guided.time_grid lacks, or a grid for a peer (which
    runs its own), is refused before anything runs."""
    cfg = _cfg()
    with open_dict(cfg):
        cfg.grids = OmegaConf.create({"dps_taper": {"grid": ["uniform", "linear_beta"]}})
    trial = tune_methods.run(cfg, tmp_path)["trials"]["dps_taper"]
    assert [s["grid"] for s in trial["settings"]] == ["uniform", "linear_beta"]
    first, second = (s["psnr"] for s in trial["scores"])
    assert first != second
    prior, truth = priors.load("digits"), tuning("digits", 1)
    op = build(cfg.tasks_available.box, in_shape=tuple(prior.shape))
    runtime = {"op": op, "y": op(truth.float()), "sigma_y": 0.05}
    node = catalogue.with_settings(cfg.methods.dps_taper, {"grid": "linear_beta"}, "dps_taper")
    method = build_method(node, prior, **runtime)
    seen = []
    sampler_call = type(method.sampler).__call__

    def recording(self, denoiser, x_T, ts, **kwargs):
        seen.append(ts)
        return sampler_call(self, denoiser, x_T, ts, **kwargs)

    type(method.sampler).__call__ = recording
    try:
        tune_methods.trial(method, prior, truth, 3, 0)
    finally:
        type(method.sampler).__call__ = sampler_call
    expected = guided.time_grid(3, "linear_beta", schedule=prior.schedule)
    assert len(seen) == 1 and torch.equal(seen[0], expected)
    bad = catalogue.with_settings(cfg.methods.dps_taper, {"grid": "linear"}, "dps_taper")
    with pytest.raises(ValueError, match="grid must be one of"):
        build_method(bad, prior, **runtime)
    peer = OmegaConf.merge(
        OmegaConf.to_container(cfg.methods.deepinv_dps), {"grid": "linear_beta"}
    )
    with pytest.raises(ValueError, match="own time grid"):
        build_method(peer, prior, **runtime)


@pytest.mark.filterwarnings("ignore::guided.DivergenceWarning")  # 2 and 3 steps
def test_several_budgets_score_a_setting_by_its_mean_over_them(tmp_path):
    """With steps=[2,3] each setting's PSNR is the mean of its PSNRs at 2 and at 3 steps (each
    the single-budget trial's: the same draws), the choice follows that mean, a divergence at
    either budget scores NaN and names the budget, and a bad list is refused before anything
    runs."""
    at = {s: tune_methods.run(_cfg(f"steps=[{s}]"), tmp_path / str(s)) for s in (2, 3)}
    both = tune_methods.run(_cfg("steps=[3,2]"), tmp_path / "both")
    assert both["steps"] == [2, 3]
    trial = both["trials"]["dps_taper"]
    for k, score in enumerate(trial["scores"]):
        two, three = (at[s]["trials"]["dps_taper"]["scores"][k]["psnr"] for s in (2, 3))
        assert two != pytest.approx(three, abs=1e-6)  # the budgets differ
        assert score["psnr_per_budget"] == pytest.approx({"2": two, "3": three}, abs=1e-9)
        assert score["psnr"] == pytest.approx((two + three) / 2, abs=1e-9)
        assert score["nfe"] == 5  # 2 + 3 evaluations per sample
    means = [s["psnr"] for s in trial["scores"]]
    assert trial["best"] == trial["settings"][means.index(max(means))]
    assert (
        "2 and 3 steps (PSNR: the mean over the budgets)"
        in (tmp_path / "both" / "table.md").read_text()
    )

    real = tune_methods.trial

    def diverging_at_three(method, prior, truth, steps, *rest):
        score = real(method, prior, truth, steps, *rest)
        return score | {"psnr": math.nan, "diverged": "made up"} if steps == 3 else score

    with mock.patch.object(tune_methods, "trial", diverging_at_three):
        score = tune_methods.over_budgets(*_built(), [2, 3], 0)
    assert math.isnan(score["psnr"]) and score["diverged"] == "3 steps: made up"
    for bad in ("steps=[]", "steps=[3,3]", "steps=[0]"):
        with pytest.raises(ValueError, match="steps"):
            tune_methods.run(_cfg(bad), tmp_path / "bad")


def _built():
    """DPS with the taper, built for box inpainting of one training digit, with the prior and
    the truth: the arguments :func:`tune_methods.trial` takes before the budget."""
    cfg = _cfg()
    prior, truth = priors.load("digits"), tuning("digits", 1)
    op = build(cfg.tasks_available.box, in_shape=tuple(prior.shape))
    method = build_method(cfg.methods.dps_taper, prior, op=op, y=op(truth.float()), sigma_y=0.05)
    return method, prior, truth
