"""Calibration of the particle samplers on Gaussian priors, whose posterior is exact.

    python -m experiments.posterior_variance
    python -m experiments.posterior_variance --steps 100 --particles 32 128

For each problem (a Gaussian prior, a random matrix, a noise level) and each sampler, prints
the ratio of the samples' variance to the exact posterior variance along each observed
right-singular direction of the operator (1 is calibrated; below 1 under-dispersed) and the
largest standardised error of the mean. These are the figures the MCGdiff docstring quotes.
Plain script, no Hydra: its few options are command-line flags.
"""

from __future__ import annotations

import argparse

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

SAMPLERS: dict[str, Callable[..., guided.Sampler]] = {
    "MCGdiff": guided.MCGdiff,
    "MCGdiff (below=None)": lambda *a, **k: guided.MCGdiff(*a, below=None, **k),
    "TDS": guided.TDS,
}


def variance_ratios(
    sampler: guided.Sampler,
    problem: tuple[priors.GaussianMixture, operators.MatrixOperator, torch.Tensor, float],
    steps: int,
    rows: int,
    seed: int = 0,
) -> tuple[torch.Tensor, float]:
    """The variance ratios along the observed directions and the largest |mean error| in
    posterior standard deviations."""
    prior, op, y, sigma_y = problem
    g = torch.Generator().manual_seed(seed)
    d = prior.means.shape[1]
    x_T = guided.initial_noise(prior.schedule, (rows, d), g, dtype=F64)
    out = sampler(prior, x_T, guided.time_grid(steps), generator=g)
    exact = prior.posterior(op.matrix, y[0], sigma_y)
    observed = int((op.singulars.abs() > op.rcond).sum())
    basis = op.Vt(torch.eye(d, dtype=F64))[:, :observed]  # e_j^T V: columns are directions
    z = out @ basis
    cov = basis.T @ exact.covs[0] @ basis
    ratio = z.var(0) / cov.diagonal()
    error = ((z.mean(0) - exact.means[0] @ basis) / cov.diagonal().sqrt()).abs().max()
    return ratio, float(error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--particles", type=int, nargs="+", default=[32])
    parser.add_argument("--rows", type=int, default=2000, help="samples at 100 steps")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print("| problem | sampler | steps | particles | variance ratios | max |mean error| / sd |")
    print("|---|---|---|---|---|---|")
    for label, spec in PROBLEMS.items():
        problem = gaussian_problem(**spec)
        _, op, y, sigma_y = problem
        for name, make in SAMPLERS.items():
            for steps in args.steps:
                for particles in args.particles:
                    rows = max(200, args.rows * 100 // steps)  # equal cost per steps
                    sampler = make(op, y, sigma_y, particles=particles)
                    ratio, error = variance_ratios(sampler, problem, steps, rows)
                    text = " ".join(f"{float(r):.2f}" for r in ratio)
                    print(f"| {label} | {name} | {steps} | {particles} | {text} | {error:.2f} |")


if __name__ == "__main__":
    main()
