r"""The Gaussian-mixture posterior benchmark of MCGdiff (Cardoso et al., 2024).

    python -m experiments.benchmarks.gmm_benchmark   # prior, DPS (2 forms), PiGDM, DDRM, MCGdiff
    python -m experiments.benchmarks.gmm_benchmark dims=[8] problems=5 run=[prior,pigdm]

Protocol (the authors' code, ``ipwdp``): a 25-component mixture in :math:`d_x` dimensions
with means :math:`(-8i, -8j)` for :math:`i, j \in \{-2..2\}` tiled over the coordinates,
identity covariances and weights :math:`\propto \mathcal{N}(0, 1)^2`; an operator
:math:`A = U \operatorname{diag}(s) V_{1:d_y}` with random orthogonal :math:`U, V` and
:math:`s` sorted uniform draws; :math:`\sigma_y = u \max s`, :math:`u \sim U(0, 1)`;
:math:`y = A x^* + \sigma_y \epsilon` with :math:`x^*` from the prior. The posterior is again
a Gaussian mixture, so each method's samples are compared with exact posterior samples by
the sliced and max-sliced Wasserstein distances over 100 random directions (W1 per slice,
and the max-sliced W2 that POT's ``max_sliced_wasserstein_distance`` reports, which is the
figure of the authors' benchopt reference). Each cell
(:math:`d_x, d_y`) has ``problems`` random problems; the table reports mean
:math:`\pm 1.96` standard errors and each method's cost (network evaluations and VJPs per
sample, wall time). The prior is the exact mixture denoiser under the 1000-step linear DDPM
schedule, so every difference comes from the guidance rule and the sampler. With
``noise_schedule=rectified`` it is the flow-matching prior of the same mixture: the mixture's exact
velocity field on the :class:`~priors.RectifiedSchedule` (pure noise at :math:`t = 1`),
reached through :class:`~priors.FlowDenoiser`, so every method runs through the velocity
parametrisation a flow model has. ``mean err`` is
the RMS error of the sample mean against the exact posterior mean, ``cov err`` the samples'
covariance against the exact posterior's (relative, Frobenius norm; the mixture's moments),
``cover 50%`` and ``cover 90%`` the calibration: the share of exact draws inside the
method's central intervals along each direction (0.5 and 0.9 when calibrated).
With ``gaussian=true`` the prior is one Gaussian :math:`\mathcal{N}(m, I)`, so the posterior
is Gaussian (PiGDM's guidance is then exact up to the sampler's discretisation); with
``covariance=dense`` as well, :math:`\mathcal{N}(m, I + L L^\top)`, where only rules that
use the prior's covariance (MMPS) are exact.

The table is a leaderboard (:mod:`experiments.benchmarks.leaderboard`): per cell, the
floor (two sets of exact posterior samples against each other), each method's paired
difference to ``reference`` on the same problems, and a verdict (``best``, ``≈ best``,
``≈ floor``).

**Budgets.** ``steps`` may be a list: every method then runs at each step count (rows
``name@steps``), and ``cost_max_sw2.png`` and ``cost_sw.png`` draw each cell's quality
against cost (network evaluations plus VJPs per sample) with the floor; the leaderboard
ranks every method and budget together::

    python -m experiments.benchmarks.gmm_benchmark dims=[8] 'steps=[25,100,400]' \
        'run=[prior,pigdm,mmps,dcps]'

Add a rule by config, from the shared catalogue (``configs/catalogue/methods.yaml``) or the
command line; it is built with ``op=``, ``y=``, ``sigma_y=`` injected and gets its row::

    python -m experiments.benchmarks.gmm_benchmark dims=[8] \
        +methods.mine.guidance._target_=my_module.MyRule +methods.mine.guidance._partial_=true \
        +methods.mine.sampler._target_=guided.DDPM 'run=[prior,pigdm,mine]'

A run that diverges (the guided denoiser's NaN guard fires, as with DPS's
:math:`1/\sigma_y^2` score at tiny :math:`\sigma_y`, or samples exceed ``BLOWUP`` in
magnitude) is counted in the ``diverged`` column
and left out of the means. Writes ``results.csv`` (one row per method and problem),
``table.csv`` and ``table.md`` (aggregated) and ``projections.png`` (the first two
coordinates of one problem per :math:`d_x`: exact posterior against each method). The tables
are rewritten after every problem; while the run goes on, ``table.md`` opens with a line
saying how many problems it covers, and ``metrics.json`` appears when the run ends.

References:
    | Monte Carlo guided Diffusion for Bayesian linear inverse problems (Cardoso et al., 2024)
    | https://arxiv.org/abs/2308.07983
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import time
import zlib

from pathlib import Path
from typing import Any

import hydra
import matplotlib
import torch

from omegaconf import DictConfig, ListConfig

import checks
import operators
import priors

from evaluation import interval_coverage, random_directions, slice_distances
from experiments.benchmarks.leaderboard import (
    MEASURES,
    SCORE,
    aggregate,
    floor_cells,
    markdown,
)
from experiments.shared.build import Method, build_method
from experiments.shared.report import progress, serve
from experiments.shared.runs import launch, write_metrics
from priors.files import atomic_write, atomic_write_text

matplotlib.use("Agg")

import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

#: Samples beyond this magnitude (the mixture's means lie within 16 per coordinate) count as a
#: diverged run, like NaN: DPS's score form at tiny sigma_y reaches 1e31 without overflowing.
BLOWUP = 1e6
#: The Gaussian prior's covariances (``covariance``, with ``gaussian=true``).
COVARIANCES = ("identity", "dense")
#: The prior's schedule (``noise_schedule``): the exact mixture on the linear DDPM schedule, or its
#: exact velocity field on the rectified schedule of flow matching.
SCHEDULES = ("linear", "rectified")


def denoiser(prior: priors.GaussianMixture) -> priors.Denoiser:
    """The denoiser the methods run on: the mixture itself, or, on a rectified schedule, its
    exact velocity field as a :class:`priors.FlowDenoiser`."""
    if isinstance(prior.schedule, priors.RectifiedSchedule):
        return priors.FlowDenoiser(prior.velocity, prior.schedule, prior.shape)
    return prior


def mixture(
    dim: int,
    generator: torch.Generator,
    gaussian: bool = False,
    covariance: str = "identity",
    schedule: str = "linear",
) -> priors.GaussianMixture:
    """The 25-component mixture of the protocol in ``dim`` (even) dimensions, on the linear
    DDPM schedule or the rectified one (``schedule``, one of :data:`SCHEDULES`); with
    ``gaussian``, one component N(m, C) with m ~ N(0, 4 I) instead (a Gaussian posterior),
    C = I (``covariance="identity"``) or, with ``"dense"``, C = I + L L^T for a standard normal
    L / sqrt(dim) (correlated coordinates, where PiGDM's isotropic approximation is wrong)."""
    if dim < 2 or dim % 2:
        raise ValueError(f"dims must be even and >= 2, got {dim}")
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    if covariance != "identity" and not gaussian:
        raise ValueError(f"covariance={covariance!r} needs gaussian=true (one component)")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    noising = priors.RectifiedSchedule() if schedule == "rectified" else priors.LinearSchedule()
    if gaussian:
        mean = 2 * torch.randn(1, dim, generator=generator, dtype=torch.float64)
        cov = torch.eye(dim, dtype=torch.float64)
        if covariance == "dense":
            root = torch.randn(dim, dim, generator=generator, dtype=torch.float64) / dim**0.5
            cov = cov + root @ root.T
        return priors.GaussianMixture(torch.ones(1, dtype=torch.float64), mean, cov[None], noising)
    grid = torch.tensor([(-8.0 * i, -8.0 * j) for i in range(-2, 3) for j in range(-2, 3)])
    means = grid.repeat(1, dim // 2).to(torch.float64)
    weights = torch.randn(25, generator=generator, dtype=torch.float64) ** 2
    covs = torch.eye(dim, dtype=torch.float64).expand(25, dim, dim)
    return priors.GaussianMixture(weights, means, covs, noising)


def mixture_moments(mixture: priors.GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and covariance of a Gaussian mixture: sum_k w_k m_k and
    sum_k w_k (C_k + m_k m_k^T) - m m^T."""
    w = mixture.weights / mixture.weights.sum()
    mean = w @ mixture.means
    second = torch.einsum("k,kde->de", w, mixture.covs)
    second = second + torch.einsum("k,kd,ke->de", w, mixture.means, mixture.means)
    return mean, second - torch.outer(mean, mean)


def covariance_error(x: torch.Tensor, covariance: torch.Tensor) -> float:
    """The samples' covariance against the exact one, relative in the Frobenius norm."""
    return float(torch.linalg.norm(torch.cov(x.T) - covariance) / torch.linalg.norm(covariance))


def coverage(
    x: torch.Tensor, exact: torch.Tensor, directions: torch.Tensor, level: float
) -> float:
    """The share of exact draws inside the samples' central ``level`` interval, projected on
    each direction and averaged over directions (:func:`evaluation.interval_coverage`)."""
    return float(interval_coverage(x @ directions.T, exact @ directions.T, level).mean())


def problem(
    prior: priors.GaussianMixture, d_y: int, generator: torch.Generator
) -> tuple[operators.MatrixOperator, torch.Tensor, float]:
    """A random operator ``U diag(s) V_{1:d_y}``, its measurement of a prior draw, sigma_y."""
    d = prior.shape[0]
    if not 1 <= d_y <= d:
        raise ValueError(f"measurements must lie in [1, {d}], got {d_y}")
    u = torch.linalg.qr(torch.randn(d_y, d_y, generator=generator, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))[0]
    s = torch.rand(d_y, generator=generator, dtype=torch.float64).sort(descending=True).values
    a = u @ torch.diag(s) @ v[:d_y]
    sigma_y = float(torch.rand((), generator=generator, dtype=torch.float64)) * float(s.max())
    x = prior.sample(1, generator)
    y = x @ a.T + sigma_y * torch.randn(1, d_y, generator=generator, dtype=torch.float64)
    return operators.MatrixOperator(a), y, sigma_y


def run_method(
    method: Method,
    prior: priors.Denoiser,
    samples: int,
    steps: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, priors.Cost, float]:
    """Samples one built method on one problem: samples, cost, wall time."""
    ts = method.times(steps)
    x_T = method.initial_noise((samples, prior.shape[0]), generator, ts, dtype=torch.float64)
    cost = priors.Cost()
    start = time.perf_counter()
    x = method(x_T, ts, generator, cost)
    return x, cost, time.perf_counter() - start


def step_counts(steps: Any) -> list[int]:
    """``steps`` as a sorted list of budgets: one step count or a list of them."""
    values = list(steps) if isinstance(steps, (list, tuple, ListConfig)) else [steps]
    if not values:
        raise ValueError("steps must be a step count or a non-empty list of them")
    counts = [checks.integer(v, "steps", low=1) for v in values]
    if len(set(counts)) != len(counts):
        raise ValueError(f"steps must not repeat a step count, got {counts}")
    return sorted(counts)


def label(name: str, steps: int, budgets: list[int]) -> str:
    """A run's row name: the method's name, with ``@steps`` when several budgets run."""
    return name if len(budgets) == 1 else f"{name}@{steps}"


def run(cfg: DictConfig, out_dir: Path) -> list[dict[str, Any]]:
    """The benchmark's table (see :func:`benchmark`)."""
    return benchmark(cfg, out_dir)["table"]


def benchmark(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Runs the benchmark; writes the CSVs, the leaderboard (``table.md``), the figure and
    ``metrics.json``; returns the metrics."""
    torch.set_num_threads(int(cfg.threads))
    unknown = [m for m in cfg.run if m not in cfg.methods]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; configured: {sorted(cfg.methods)}")
    checks.integer(cfg.problems, "problems", low=1)
    checks.integer(cfg.samples, "samples", low=2)
    budgets = step_counts(cfg.steps)
    checks.integer(cfg.threads, "threads", low=1)
    checks.integer(cfg.directions, "directions", low=1)
    if cfg.noise_schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {cfg.noise_schedule!r}")
    if not cfg.dims or not cfg.measurements or not cfg.run:
        raise ValueError("dims, measurements and run must each name at least one entry")
    labels = {(name, n): label(name, n, budgets) for name in cfg.run for n in budgets}
    reference = None if cfg.reference is None else str(cfg.reference)
    if reference in cfg.run:  # a method's name: its run at the smallest budget
        reference = labels[(reference, budgets[0])]
    if reference is not None and reference not in labels.values():
        raise ValueError(
            f"reference must be one of run {list(cfg.run)} (or a label {sorted(labels.values())})"
            f" or null, got {reference!r}"
        )
    table: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    shown: dict[int, dict[str, torch.Tensor]] = {}
    cells = len(cfg.dims) * len(cfg.measurements) * int(cfg.problems)
    bar = progress(cells, "problems", "problem")
    for i_d, d_x in enumerate(cfg.dims):
        for i_y, d_y in enumerate(cfg.measurements):
            for p in range(int(cfg.problems)):
                seed = int(cfg.seed) + 2**i_d * 3**i_y * 1000 + p
                g = torch.Generator().manual_seed(seed)
                prior = mixture(
                    int(d_x), g, bool(cfg.gaussian), str(cfg.covariance), str(cfg.noise_schedule)
                )
                field = denoiser(prior)
                op, y, sigma_y = problem(prior, int(d_y), g)
                posterior = prior.posterior(op.matrix, y[0], sigma_y)
                exact = posterior.sample(int(cfg.samples), g)
                exact_mean, exact_cov = mixture_moments(posterior)
                directions = random_directions(int(d_x), int(cfg.directions), g)
                # the floor: two independent exact sample sets, drawn after every other use
                # of the problem's stream (the methods' numbers do not move)
                second = posterior.sample(int(cfg.samples), g)
                floors.append(
                    {"d_x": int(d_x), "d_y": int(d_y), "problem": p}
                    | {SCORE: float(slice_distances(second, exact, directions, p=2).max())}
                    | {"sw": float(slice_distances(second, exact, directions).mean())}
                )
                if i_y == 0 and p == 0:
                    shown[int(d_x)] = {"exact posterior": exact}
                built = {}  # every method first: a bad setting is refused before any runs
                for name in cfg.run:
                    try:
                        built[name] = build_method(
                            cfg.methods[name], field, op=op, y=y, sigma_y=sigma_y
                        )
                    except (ValueError, TypeError) as error:
                        raise type(error)(f"method {name!r}: {error}") from error
                for name, steps in itertools.product(cfg.run, budgets):
                    samples, method = int(cfg.samples), labels[(name, steps)]
                    # each method's own stream, from the problem and the method's name: its
                    # score does not depend on which other methods run, or in which order
                    own = torch.Generator().manual_seed(seed * 100_003 + zlib.crc32(name.encode()))
                    try:
                        x, cost, wall = run_method(built[name], field, samples, steps, own)
                        failed = not bool(torch.isfinite(x).all()) or float(x.abs().max()) > BLOWUP
                    except FloatingPointError:  # the guided denoiser's NaN guard
                        failed = True
                    row = {"method": method, "d_x": int(d_x), "d_y": int(d_y), "problem": p}
                    row["sigma_y"] = sigma_y
                    if failed:  # counted in the table, left out of the means
                        measured = dict.fromkeys(
                            MEASURES,
                            math.nan,
                        )
                        rows.append(row | measured | {"failed": 1})
                        continue
                    distances = slice_distances(x, exact, directions)
                    measured = {
                        "sw": float(distances.mean()),
                        "max_sw": float(distances.max()),
                        "max_sw2": float(slice_distances(x, exact, directions, p=2).max()),
                        "mean_err": float((x.mean(0) - exact_mean).norm() / math.sqrt(d_x)),
                        "cov_err": covariance_error(x, exact_cov),
                        "cover50": coverage(x, exact, directions, 0.5),
                        "cover90": coverage(x, exact, directions, 0.9),
                        "nfe": cost.nfe,
                        "vjp": cost.vjp,
                        "wall_s": wall,
                    }
                    rows.append(row | measured | {"failed": 0})
                    if i_y == 0 and p == 0 and steps == budgets[-1]:
                        shown[int(d_x)][method] = x
                done = (i_d * len(cfg.measurements) + i_y) * int(cfg.problems) + p + 1
                table = write_tables(rows, floors, out_dir, reference, (done, cells))
                log.info("d_x=%d d_y=%d problem %d/%d done", d_x, d_y, p + 1, cfg.problems)
                bar.update()
    bar.close()
    figure(shown, out_dir / "projections.png")
    if len(budgets) > 1:
        curves = {label: key for key, label in labels.items()}
        for measure in (SCORE, "sw"):
            cost_figure(table, floors, curves, measure, out_dir / f"cost_{measure}.png")
    leaderboard = markdown(table, floor_cells(floors), reference)
    metrics = {"table": table, "floors": floors, "leaderboard": leaderboard}
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def write_tables(
    rows: list[dict[str, Any]],
    floors: list[dict[str, Any]],
    out_dir: Path,
    reference: str | None,
    progress: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Writes ``results.csv``, ``table.csv`` and ``table.md`` (the leaderboard) from the rows
    so far (after every problem, so a long run shows its partial table; each file is
    replaced whole). With ``progress`` = (problems finished, problems in the run) short of
    the end, ``table.md`` opens with a line saying the table is partial (its means are over
    the problems finished so far); the CSV files hold the rows so far."""
    table = aggregate(rows, reference, floors)
    for name, records in (("results.csv", rows), ("table.csv", table)):

        def write(tmp: str, records: list[dict[str, Any]] = records) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)

        atomic_write(out_dir / name, write)
    text = markdown(table, floor_cells(floors), reference)
    if progress is not None and progress[0] < progress[1]:
        text = (
            f"**Partial: {progress[0]} of {progress[1]} problems finished.** The run goes on; "
            "the means below are over the problems finished so far (`metrics.json` appears "
            "when it ends).\n\n" + text
        )
    atomic_write_text(out_dir / "table.md", text)
    return table


def figure(shown: dict[int, dict[str, torch.Tensor]], path: Path) -> None:
    """Coordinates 1 and 2 of the first problem of each d_x, one panel per method."""
    columns = max(len(v) for v in shown.values())
    fig, axes = plt.subplots(
        len(shown), columns, figsize=(3 * columns, 3 * len(shown)), squeeze=False
    )
    for r, (d_x, panels) in enumerate(shown.items()):
        for c, (name, x) in enumerate(panels.items()):
            ax = axes[r, c]
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
            ax.set_title(f"d_x={d_x}: {name}", fontsize=8)
            ax.set_xlim(-25, 25)
            ax.set_ylim(-25, 25)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cost_figure(
    table: list[dict[str, Any]],
    floors: list[dict[str, Any]],
    curves: dict[str, tuple[str, int]],
    measure: str,
    path: Path,
) -> None:
    """Quality against cost: one panel per cell (d_x, d_y), ``measure`` (mean ± 1.96 SE over
    problems) against network evaluations plus VJPs per sample, one line per method through
    its budgets, and the exact-vs-exact floor as a dashed line; both axes logarithmic."""
    cells = sorted({(r["d_x"], r["d_y"]) for r in table})
    dims, ys = sorted({c[0] for c in cells}), sorted({c[1] for c in cells})
    fig, axes = plt.subplots(
        len(dims), len(ys), figsize=(4.5 * len(ys), 3.5 * len(dims)), squeeze=False
    )
    names = list(dict.fromkeys(name for name, _ in curves.values()))
    for (d_x, d_y), ax in zip(
        cells, (axes[dims.index(c[0]), ys.index(c[1])] for c in cells), strict=True
    ):
        for k, name in enumerate(names):
            points = sorted(
                (r["nfe"] + r["vjp"], r[measure], r[measure + "_ci"])
                for r in table
                if (r["d_x"], r["d_y"]) == (d_x, d_y)
                and curves[r["method"]][0] == name
                and not math.isnan(r[measure])
            )
            if points:
                cost, value, ci = zip(*points, strict=True)
                below = [min(c, 0.9 * v) for c, v in zip(ci, value, strict=True)]  # log axis
                ax.errorbar(
                    [max(c, 1.0) for c in cost], value, yerr=[below, list(ci)], marker="o",
                    ms=3, label=name, color=plt.get_cmap("tab20")(k % 20),
                )  # fmt: skip
        floor = [f[measure] for f in floors if (f["d_x"], f["d_y"]) == (d_x, d_y)]
        if floor:
            ax.axhline(sum(floor) / len(floor), color="k", ls="--", lw=1, label="exact (floor)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"d_x={d_x}, d_y={d_y}", fontsize=9)
        ax.set_xlabel("NFE + VJP per sample")
        ax.set_ylabel(measure)
    shown: dict[str, Any] = {}  # every method's line once, whichever panels it ran in
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            shown.setdefault(name, handle)
    axes[0, -1].legend(
        list(shown.values()), list(shown), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0)
    )
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


@hydra.main(version_base=None, config_path="../configs/gmm_benchmark", config_name="gmm_benchmark")
def main(cfg: DictConfig) -> None:
    serve(cfg, benchmark, log, lambda metrics: metrics["leaderboard"])


if __name__ == "__main__":
    launch(main)
