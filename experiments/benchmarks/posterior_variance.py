"""Calibration of the particle samplers on Gaussian priors, whose posterior is exact.

    python -m experiments.benchmarks.posterior_variance
    python -m experiments.benchmarks.posterior_variance --steps 100 --particles 32 128
    python -m experiments.benchmarks.posterior_variance --steps 100 \
        --methods DDRM DiffPIR "DDPM + PiGDM"
    python -m experiments.benchmarks.posterior_variance --unguided --methods MCGdiff

For each problem (a Gaussian prior, a random matrix, a noise level) and each sampler, prints
the ratio of the samples' variance to the exact posterior variance along each observed
right-singular direction of the operator (1 is calibrated; below 1 under-dispersed) and the
largest standardised error of the mean (in posterior standard deviations). These are the
figures the MCGdiff and TDS docstrings and the method cards (``docs/methods``) quote.
Plain script, no Hydra: its few options are command-line flags.
"""

from __future__ import annotations

import argparse
import warnings

from collections.abc import Callable

import torch

import guided
import operators
import priors

F64 = torch.float64


def gaussian_problem(
    d: int, d_y: int, sigma_y: float, seed: int, correlated: bool
) -> tuple[priors.GaussianMixture, operators.MatrixOperator, torch.Tensor, float]:
    """A Gaussian prior (identity covariance, or identity plus a random low-rank part), a
    standard normal ``(d_y, d)`` matrix and a measurement of a prior sample."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=F64)
    cov = torch.eye(d, dtype=F64)
    if correlated:
        low = 0.3 * torch.randn(d, d, generator=g, dtype=F64)
        cov = cov + low @ low.T
    prior = priors.GaussianMixture(
        torch.ones(1, dtype=F64), mean[None], cov[None], priors.LinearSchedule()
    )
    a = torch.randn(d_y, d, generator=g, dtype=F64)
    y = prior.sample(1, g) @ a.T + sigma_y * torch.randn(1, d_y, generator=g, dtype=F64)
    return prior, operators.MatrixOperator(a), y, sigma_y


PROBLEMS = {
    "d 3, d_y 2, sigma_y 0.5": {"d": 3, "d_y": 2, "sigma_y": 0.5, "seed": 2, "correlated": False},
    "d 8, d_y 3, sigma_y 0.01": {"d": 8, "d_y": 3, "sigma_y": 0.01, "seed": 0, "correlated": True},
    "d 8, d_y 3, sigma_y 0.3": {"d": 8, "d_y": 3, "sigma_y": 0.3, "seed": 0, "correlated": True},
    "d 8, d_y 3, sigma_y 1": {"d": 8, "d_y": 3, "sigma_y": 1.0, "seed": 0, "correlated": True},
}

Build = Callable[
    [operators.MatrixOperator, torch.Tensor, float, int, priors.Denoiser],
    tuple[guided.Sampler, priors.Denoiser],
]


def _term(make: Callable[..., guided.Guidance], sampler: Callable[[], guided.Sampler]) -> Build:
    def build(op, y, sigma_y, particles, prior):  # noqa: ANN001, ANN202 (a table entry)
        return sampler(), guided.GuidedDenoiser(prior, make(op, y, sigma_y))

    return build


def _sampler(make: Callable[..., guided.Sampler]) -> Build:
    def build(op, y, sigma_y, particles, prior):  # noqa: ANN001, ANN202 (a table entry)
        return make(op, y, sigma_y, particles), prior

    return build


#: Every method for linear measurements with Gaussian noise, with its defaults.
SAMPLERS: dict[str, Build] = {
    "MCGdiff": _sampler(lambda op, y, s, n: guided.MCGdiff(op, y, s, particles=n)),
    "MCGdiff (below=None)": _sampler(
        lambda op, y, s, n: guided.MCGdiff(op, y, s, particles=n, below=None)
    ),
    "MCGdiff (eta 0.85)": _sampler(
        lambda op, y, s, n: guided.MCGdiff(op, y, s, particles=n, eta=0.85)
    ),
    "FPS": _sampler(lambda op, y, s, n: guided.FPS(op, y, s, particles=n)),
    "FPS (authors' weights)": _sampler(
        lambda op, y, s, n: guided.FPS(op, y, s, particles=n, twisted=False)
    ),
    "TDS": _sampler(lambda op, y, s, n: guided.TDS(op, y, s, particles=n)),
    "TDS (tweedie twist)": _sampler(
        lambda op, y, s, n: guided.TDS(op, y, s, particles=n, twist="tweedie", iterations=8)
    ),
    "DDRM": _sampler(lambda op, y, s, n: guided.DDRM(op, y, s)),
    "DDNMPlus": _sampler(lambda op, y, s, n: guided.DDNMPlus(op, y, s)),
    "DiffPIR": _sampler(lambda op, y, s, n: guided.DiffPIR(op, y, s)),
    "DPSSampler (zeta 1)": _sampler(lambda op, y, s, n: guided.DPSSampler(op, y, 1.0)),
    "DDPM + DPS (score)": _term(guided.DPS, guided.DDPM),
    "DDPM + PiGDM": _term(guided.PiGDM, guided.DDPM),
    "DDPM + MMPS": _term(guided.MMPS, guided.DDPM),
    "DDPM + MMPS (8 CG)": _term(lambda op, y, s: guided.MMPS(op, y, s, iterations=8), guided.DDPM),
    "DDPM + TMPD": _term(guided.TMPD, guided.DDPM),
    "PnPDM": _sampler(lambda op, y, s, n: guided.PnPDM(op, y, s)),
    "PnPDM (rho_min 0.01, 20 prior steps)": _sampler(
        lambda op, y, s, n: guided.PnPDM(op, y, s, rho_min=0.01, prior_steps=20)
    ),
    "DCPS": _sampler(lambda op, y, s, n: guided.DCPS(op, y, s)),
    "EnKG": _sampler(lambda op, y, s, n: guided.EnKG(op, y, particles=n, interval=(0.0, 0.5))),
    "DPSSampler + ZerothOrder": _sampler(
        lambda op, y, s, n: guided.DPSSampler(op, y, 1.0, guided.ZerothOrder, queries=8)
    ),
}


def takes_particles(
    build: Build,
    problem: tuple[priors.GaussianMixture, operators.MatrixOperator, torch.Tensor, float],
) -> bool:
    """Whether a table entry is a particle method (its sampler has ``particles``), so that it
    runs at each ``--particles`` count."""
    prior, op, y, sigma_y = problem
    sampler, _ = build(op, y, sigma_y, 2, prior)
    return hasattr(sampler, "particles")


def variance_ratios(
    build: Build,
    problem: tuple[priors.GaussianMixture, operators.MatrixOperator, torch.Tensor, float],
    steps: int,
    rows: int,
    particles: int = 32,
    seed: int = 0,
) -> tuple[torch.Tensor, float]:
    """The variance ratios along the observed directions and the largest |mean error| in
    posterior standard deviations."""
    prior, op, y, sigma_y = problem
    g = torch.Generator().manual_seed(seed)
    d = prior.means.shape[1]
    x_T = guided.initial_noise(prior.schedule, (rows, d), g, dtype=F64)
    with warnings.catch_warnings():  # the residual is what this measures
        warnings.simplefilter("ignore", guided.DivergenceWarning)
        warnings.filterwarnings("ignore", ".*is derivative-free")  # run on a linear operator
        sampler, denoiser = build(op, y, sigma_y, particles, prior)
        out = sampler(denoiser, x_T, guided.time_grid(steps), generator=g)
    exact = prior.posterior(op.matrix, y[0], sigma_y)
    observed = int((op.singulars.abs() > op.rcond).sum())
    basis = op.Vt(torch.eye(d, dtype=F64))[:, :observed]  # e_j^T V: columns are directions
    z = out @ basis
    cov = basis.T @ exact.covs[0] @ basis
    ratio = z.var(0) / cov.diagonal()
    error = ((z.mean(0) - exact.means[0] @ basis) / cov.diagonal().sqrt()).abs().max()
    return ratio, float(error)


def unguided_variance(steps: list[int], rows: int = 100_000) -> None:
    """Prints the variance DDPM and DDIM(0) give a 1-D unit Gaussian (exact denoiser): the
    samplers' own discretisation, which bounds every posterior sampler run on them."""
    centred = priors.GaussianMixture(
        torch.ones(1, dtype=F64), torch.zeros(1, 1, dtype=F64), torch.ones(1, 1, 1, dtype=F64),
        priors.LinearSchedule(),
    )  # fmt: skip
    print("| sampler | steps | variance of a unit Gaussian |")
    print("|---|---|---|")
    for name, sampler in (("DDPM", guided.DDPM()), ("DDIM(0)", guided.DDIM(0.0))):
        for n in steps:
            g = torch.Generator().manual_seed(0)
            x_T = guided.initial_noise(centred.schedule, (rows, 1), g, dtype=F64)
            x = sampler(centred, x_T, guided.time_grid(n), generator=g)
            print(f"| {name} | {n} | {float(x.var()):.3f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--particles", type=int, nargs="+", default=[32])
    parser.add_argument("--rows", type=int, default=2000, help="samples at 100 steps")
    parser.add_argument("--methods", nargs="+", default=["MCGdiff", "MCGdiff (below=None)", "TDS"],
                        choices=sorted(SAMPLERS), metavar="METHOD",
                        help=f"any of {sorted(SAMPLERS)}")  # fmt: skip
    parser.add_argument(
        "--unguided", action="store_true", help="first, unguided samplers on a unit Gaussian"
    )
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.unguided:
        unguided_variance(args.steps)
    print("| problem | method | steps | particles | variance ratios | max |mean error| / sd |")
    print("|---|---|---|---|---|---|")
    for label, spec in PROBLEMS.items():
        problem = gaussian_problem(**spec)
        for name in args.methods:
            for steps in args.steps:
                particle = takes_particles(SAMPLERS[name], problem)
                for particles in args.particles if particle else [0]:
                    rows = max(200, args.rows * 100 // steps)  # equal cost per steps
                    shown = particles or "-"
                    try:
                        ratio, error = variance_ratios(
                            SAMPLERS[name], problem, steps, rows, max(particles, 1)
                        )
                    except FloatingPointError as failure:  # the NaN guard stopped the run
                        print(f"| {label} | {name} | {steps} | {shown} | diverged | {failure} |")
                        continue
                    text = " ".join(f"{float(r):.2f}" for r in ratio)
                    print(f"| {label} | {name} | {steps} | {shown} | {text} | {error:.2f} |")


if __name__ == "__main__":
    main()
