"""The Gaussian-mixture benchmark app on a tiny setting; any rule can be added by config."""

import csv

import pytest
import torch

from hydra import compose, initialize_config_module

import priors

from experiments.benchmarks import gmm_benchmark


def _cfg(*overrides):
    with initialize_config_module(
        version_base=None, config_module="experiments.configs.gmm_benchmark"
    ):
        return compose(
            "gmm_benchmark",
            overrides=[
                "dims=[4]",
                "measurements=[1,2]",
                "problems=2",
                "samples=200",
                "steps=20",
                *overrides,
            ],
        )


def test_protocol_pieces():
    g = torch.Generator().manual_seed(0)
    prior = gmm_benchmark.mixture(6, g)
    assert prior.means.shape == (25, 6) and prior.isotropic
    torch.testing.assert_close(prior.means[:, :2], prior.means[:, 2:4])  # tiled grid
    op, y, sigma_y = gmm_benchmark.problem(prior, 2, g)
    s = torch.linalg.svdvals(op.matrix)
    assert op.matrix.shape == (2, 6) and bool((s <= 1).all()) and 0 <= sigma_y <= float(s.max())
    assert y.shape == (1, 2)


def test_benchmark_writes_tables_and_takes_new_rules(tmp_path):
    cfg = _cfg(
        "run=[prior,pigdm,mine]",
        "+methods.mine.guidance._target_=guided.DPS",
        "+methods.mine.guidance._partial_=true",
        "+methods.mine.guidance.zeta=0.5",
        "+methods.mine.sampler._target_=guided.DDIM",
    )
    table = gmm_benchmark.run(cfg, tmp_path)
    assert {r["method"] for r in table} == {"prior", "pigdm", "mine"}
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * 2
    assert "| 4 | 1 | pigdm |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "projections.png").stat().st_size > 0
    pigdm = [r for r in table if r["method"] == "pigdm"]
    prior = [r for r in table if r["method"] == "prior"]
    assert all(p["vjp"] == 20 and q["vjp"] == 0 for p, q in zip(pigdm, prior, strict=True))


def test_bad_configs_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        gmm_benchmark.run(_cfg("run=[nope]"), tmp_path)
    with pytest.raises(ValueError, match="even"):
        gmm_benchmark.run(_cfg("dims=[5]", "run=[prior]"), tmp_path)
    with pytest.raises(ValueError, match="measurements"):
        gmm_benchmark.run(_cfg("measurements=[9]", "run=[prior]"), tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        gmm_benchmark.run(_cfg("run=[]"), tmp_path)
    with pytest.raises(ValueError, match="covariance.*gaussian=true"):
        gmm_benchmark.run(_cfg("covariance=dense", "run=[prior]"), tmp_path)
    with pytest.raises(ValueError, match="covariance must be one of"):
        gmm_benchmark.run(_cfg("gaussian=true", "covariance=full", "run=[prior]"), tmp_path)
    with pytest.raises(ValueError, match=r"schedule must be one of \('linear', 'rectified'\)"):
        gmm_benchmark.run(_cfg("noise_schedule=cosine", "run=[prior]"), tmp_path)


def test_tables_are_written_after_every_problem(tmp_path):
    """A run stopped in its second cell leaves the first cell's rows and table behind."""
    cfg = _cfg(
        "run=[prior,crash]",
        "+methods.crash.guidance._target_=tests.experiments.test_gmm_benchmark.CrashOnTwo",
        "+methods.crash.guidance._partial_=true",
        "+methods.crash.sampler._target_=guided.DDPM",
    )
    with pytest.raises(RuntimeError, match="stopped"):
        gmm_benchmark.run(cfg, tmp_path)
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 and {r["d_y"] for r in rows} == {"1"}
    text = (tmp_path / "table.md").read_text()
    assert "| 4 | 1 | crash |" in text
    assert text.startswith("**Partial: 2 of 4 problems finished.**")  # read mid-run, it says so
    assert not list(tmp_path.glob("*.tmp"))


class CrashOnTwo:
    """A guidance factory that stops the run when it meets a two-row measurement."""

    def __new__(cls, op, y, sigma_y):
        import guided

        if y.shape[-1] == 2:
            raise RuntimeError("stopped on purpose")
        return guided.PiGDM(op, y, sigma_y)


def test_diverging_runs_are_counted_not_averaged(tmp_path):
    cfg = _cfg(
        "run=[prior,boom]",
        "+methods.boom.guidance._target_=tests.experiments.test_gmm_benchmark.Exploding",
        "+methods.boom.sampler._target_=guided.DDPM",
    )
    table = gmm_benchmark.run(cfg, tmp_path)
    boom = [r for r in table if r["method"] == "boom"]
    assert all(r["failed"] == r["problems"] == 2 for r in boom)
    assert "| 2/2 |" in (tmp_path / "table.md").read_text()


class Exploding:
    """A guidance factory whose term returns Inf (built with op=, y=, sigma_y= ignored)."""

    def __new__(cls, **kwargs):
        import guided

        class Term(guided.Guidance):
            def vector(self, x_t, t, x_hat, schedule):
                return torch.full_like(x_hat, float("inf"))

        return Term()


def test_gaussian_prior_scores_posterior_means(tmp_path):
    cfg = _cfg("gaussian=true", "measurements=[2]", "samples=400", "run=[prior,pigdm,ddrm]")
    table = {r["method"]: r for r in gmm_benchmark.run(cfg, tmp_path)}
    prior = gmm_benchmark.mixture(4, torch.Generator().manual_seed(0), gaussian=True)
    assert prior.means.shape == (1, 4)
    for name in ("pigdm", "ddrm"):  # within sampling error of the exact posterior mean
        assert table[name]["mean_err"] < 0.15, table[name]
    assert table["prior"]["mean_err"] > 3 * table["pigdm"]["mean_err"]


def test_the_flow_prior_is_the_mixtures_velocity_field_and_scores_alike(tmp_path):
    """noise_schedule=rectified runs every method on the mixture's exact velocity field from
    pure noise (t = 1): on a Gaussian prior PiGDM and DDRM still find the posterior mean."""
    g = torch.Generator().manual_seed(0)
    prior = gmm_benchmark.mixture(4, g, schedule="rectified")
    field = gmm_benchmark.denoiser(prior)
    assert isinstance(field, priors.FlowDenoiser) and field.schedule is prior.schedule
    assert gmm_benchmark.denoiser(gmm_benchmark.mixture(4, g)).__class__ is priors.GaussianMixture
    cfg = _cfg(
        "gaussian=true", "measurements=[2]", "samples=400", "noise_schedule=rectified",
        "run=[prior,pigdm,ddrm]",
    )  # fmt: skip
    table = {r["method"]: r for r in gmm_benchmark.run(cfg, tmp_path)}
    for name in ("pigdm", "ddrm"):
        assert table[name]["mean_err"] < 0.15, table[name]
    assert table["prior"]["mean_err"] > 3 * table["pigdm"]["mean_err"]


def test_a_dense_gaussian_prior_tells_mmps_from_pigdm(tmp_path):
    """With correlated coordinates only MMPS (which uses the prior's Tweedie covariance) has
    the exact posterior mean; measured at 20 steps: MMPS 0.014, PiGDM 0.096, prior 0.54. The
    covariance error (about 0.3 for all three at 20 DDPM steps) is reported for each."""
    cfg = _cfg(
        "gaussian=true", "covariance=dense", "measurements=[2]", "samples=400",
        "run=[prior,pigdm,mmps]",
    )  # fmt: skip
    table = {r["method"]: r for r in gmm_benchmark.run(cfg, tmp_path)}
    assert table["mmps"]["mean_err"] < 0.04
    assert table["pigdm"]["mean_err"] > 3 * table["mmps"]["mean_err"]
    assert table["prior"]["mean_err"] > 10 * table["mmps"]["mean_err"]
    assert all(0 < r["cov_err"] < 1 for r in table.values())
    assert "| cov err |" in (tmp_path / "table.md").read_text()


def test_the_moments_of_a_mixture_are_exact():
    g = torch.Generator().manual_seed(3)
    prior = gmm_benchmark.mixture(4, g)
    mean, cov = gmm_benchmark.mixture_moments(prior)
    x = prior.sample(200_000, g)
    torch.testing.assert_close(mean, x.mean(0), rtol=0, atol=0.1)
    torch.testing.assert_close(cov, torch.cov(x.T), rtol=0.02, atol=0.5)


def _rows(method, scores, d_x=8, d_y=1):
    from experiments.benchmarks import leaderboard

    return [
        {"method": method, "d_x": d_x, "d_y": d_y, "problem": p, "failed": 0}
        | {key: 1.0 for key in leaderboard.MEASURES}
        | {"max_sw2": s}
        for p, s in enumerate(scores)
    ]


def test_the_leaderboard_pairs_problems_and_names_the_winner():
    """Paired differences are taken problem by problem: a method one better than the
    reference on every problem differs by exactly -1 +- 0, although problems spread far
    more; the best is marked, one indistinguishable from it too, and the floor row shows."""
    from experiments.benchmarks import leaderboard

    spread = [10.0, 30.0, 20.0, 40.0]
    rows = (
        _rows("prior", spread)
        + _rows("good", [s - 1 for s in spread])
        + _rows("noisy", [s - 1 + d for s, d in zip(spread, (3, -3, 2, -2), strict=True)])
    )
    floors = [{"d_x": 8, "d_y": 1, "problem": p, "max_sw2": s - 1} for p, s in enumerate(spread)]
    table = {r["method"]: r for r in leaderboard.aggregate(rows, "prior", floors)}
    assert table["good"]["vs_ref"] == pytest.approx(-1.0)
    assert table["good"]["vs_ref_ci"] == pytest.approx(0.0)
    assert table["prior"]["max_sw2_ci"] > 10  # unpaired, the problems' spread dominates
    assert table["good"]["verdict"] == "best, ≈ floor"
    assert table["noisy"]["verdict"].startswith("≈ best")
    assert table["prior"]["verdict"] == ""
    text = leaderboard.markdown(list(table.values()), leaderboard.floor_cells(floors), "prior")
    assert text.count("| exact (floor) |") == 1 and "Δ max-SW2 vs prior" in text
    assert "| -1.000 ± 0.000 |" in text


def test_the_app_writes_a_leaderboard_with_its_floor(tmp_path):
    cfg = _cfg("run=[prior,pigdm]")
    gmm_benchmark.run(cfg, tmp_path)
    text = (tmp_path / "table.md").read_text()
    assert "Partial" not in text  # the finished run's table
    assert text.count("| exact (floor) |") == 2  # one per cell
    assert text.count("| best") == 2
    with pytest.raises(ValueError, match="reference"):
        gmm_benchmark.run(_cfg("run=[pigdm]"), tmp_path / "other")


@pytest.mark.slow  # over 4 s: the default suite stays under 10 minutes
def test_several_budgets_give_one_row_each_and_cost_curves(tmp_path):
    """steps=[5,20]: each method runs at both (rows name@steps, the cost as the steps), the
    paired differences are taken against the reference's smallest budget, and the two cost
    figures are drawn; a single budget keeps the plain names."""
    cfg = _cfg("steps=[20,5]", "run=[prior,pigdm]", "problems=2", "measurements=[1]")
    table = gmm_benchmark.run(cfg, tmp_path)
    by_name = {r["method"]: r for r in table}
    assert set(by_name) == {"prior@5", "prior@20", "pigdm@5", "pigdm@20"}
    assert (by_name["pigdm@5"]["nfe"], by_name["pigdm@20"]["vjp"]) == (5, 20)
    assert by_name["prior@5"]["vs_ref"] == 0.0
    for name in ("cost_max_sw2.png", "cost_sw.png"):
        assert (tmp_path / name).stat().st_size > 0
    with pytest.raises(ValueError, match="reference"):
        gmm_benchmark.run(_cfg("steps=[5,20]", "run=[pigdm]", "reference=prior@5"), tmp_path)
    table = gmm_benchmark.run(_cfg("reference=pigdm@5", "steps=[5,20]", "run=[pigdm]"), tmp_path)
    assert {r["method"] for r in table} == {"pigdm@5", "pigdm@20"}
    for bad in ("steps=[]", "steps=[5,5]", "steps=[0,5]", "steps=2.5"):
        with pytest.raises(ValueError, match="steps"):
            gmm_benchmark.run(_cfg(bad, "run=[prior]"), tmp_path / "bad")


def test_coverage_is_the_share_of_exact_draws_in_the_intervals(tmp_path):
    """Exact posterior draws as a method's samples cover 0.5 and 0.9 (within 0.03 at 4000
    samples); spread three times as wide about their mean, they cover more of the central
    50% (measured 0.96), and a third as wide, less (measured 0.18)."""
    g = torch.Generator().manual_seed(4)
    prior = gmm_benchmark.mixture(4, g)
    op, y, sigma_y = gmm_benchmark.problem(prior, 2, g)
    posterior = prior.posterior(op.matrix, y[0], sigma_y)
    exact, other = posterior.sample(4000, g), posterior.sample(4000, g)
    directions = gmm_benchmark.random_directions(4, 50, g)
    assert gmm_benchmark.coverage(other, exact, directions, 0.5) == pytest.approx(0.5, abs=0.03)
    assert gmm_benchmark.coverage(other, exact, directions, 0.9) == pytest.approx(0.9, abs=0.03)
    centre = other.mean(0)
    wide = gmm_benchmark.coverage(centre + 3 * (other - centre), exact, directions, 0.5)
    narrow = gmm_benchmark.coverage(centre + (other - centre) / 3, exact, directions, 0.5)
    assert wide > 0.7 and narrow < 0.3
    table = gmm_benchmark.run(_cfg("run=[prior]"), tmp_path)
    assert all(0 <= r["cover50"] <= r["cover90"] <= 1 for r in table)


def test_an_interval_too_wide_to_tell_gives_no_verdict():
    """A method at the floor on four problems and 600 on the fifth: its paired interval to
    the floor holds 0 but is far wider than the floor, so it is neither ≈ floor nor ≈ best."""
    from experiments.benchmarks import leaderboard

    floor = [0.1, 0.12, 0.11, 0.1, 0.13]
    rows = _rows("good", [f + 0.01 for f in floor]) + _rows("wild", [*floor[:4], 600.0])
    floors = [{"d_x": 8, "d_y": 1, "problem": p, "max_sw2": f} for p, f in enumerate(floor)]
    table = {r["method"]: r for r in leaderboard.aggregate(rows, None, floors)}
    assert table["good"]["verdict"] == "best"  # 0.01 above the floor exactly: distinguishable
    assert table["wild"]["verdict"] == ""
