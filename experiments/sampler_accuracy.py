"""Sampler accuracy on an exact Gaussian mixture: the figures quoted in the foundation issue.

    python -m experiments.sampler_accuracy

Prints (1) the mean end-point error of DDIM, DPM-Solver++ and Heun against a high-accuracy
probability-flow solution (scipy DOP853, rtol = atol = 1e-10) on a 2-D mixture under the EDM
schedule, by number of steps, and (2) the mean DDIM-inversion round-trip error (invert, then
sample on the same grid) by schedule, steps and fixed-point iterations. Plain script, no
Hydra: it has no configuration.
"""

from __future__ import annotations

import torch

from scipy.integrate import solve_ivp

import guided
import priors


def well_separated_mixture(
    dim: int, schedule: priors.Schedule, seed: int = 0
) -> priors.GaussianMixture:
    """Five components with unequal weights and random anisotropic covariances (eigenvalues in
    [0.05, 0.3]) whose means are > 10 component standard deviations apart, in 2 or more
    dimensions: the test prior of the sampler tests."""
    g = torch.Generator().manual_seed(seed)
    if dim == 2:
        means = torch.tensor([[-4.0, -4.0], [4.0, -4.0], [-4.0, 4.0], [4.0, 4.0], [0.0, 0.0]])
    elif dim >= 5:
        means = 6.0 * torch.eye(dim)[:5] - 3.0
    else:
        raise ValueError(f"dim must be 2 or >= 5, got {dim}")
    weights = torch.tensor([0.05, 0.1, 0.2, 0.25, 0.4])
    q, _ = torch.linalg.qr(torch.randn(5, dim, dim, generator=g, dtype=torch.float64))
    eig = 0.05 + 0.25 * torch.rand(5, dim, generator=g, dtype=torch.float64)
    covs = q @ torch.diag_embed(eig) @ q.mT
    return priors.GaussianMixture(weights, means.double(), covs, schedule)


def probability_flow(prior: priors.GaussianMixture, x_T: torch.Tensor) -> torch.Tensor:
    """High-accuracy probability-flow solution for an alpha = 1 (EDM) schedule: scipy's DOP853
    on dx/dlambda = E[x | x_t] - x in lambda = log(alpha / sigma), from t = 1 to t = 0."""
    schedule = prior.schedule

    def velocity(lam: float, y: torch.Tensor) -> torch.Tensor:
        t = schedule.time_of(torch.tensor(lam, dtype=torch.float64))
        x = torch.from_numpy(y).reshape(x_T.shape)
        return (prior(x, t) - x).flatten().numpy()

    span = (float(schedule.log_snr(1.0)), float(schedule.log_snr(0.0)))
    sol = solve_ivp(velocity, span, x_T.flatten().numpy(), method="DOP853", rtol=1e-10, atol=1e-10)
    if not sol.success:
        raise RuntimeError(f"the reference probability-flow solve failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1]).reshape(x_T.shape)


def main() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    prior = well_separated_mixture(2, priors.EDMSchedule())
    x_T = 80.0 * torch.randn(
        64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    reference = probability_flow(prior, x_T)
    print("probability-flow end-point error (EDM schedule, 64 paths, mean L2)")
    print("sampler     steps   NFE    error")
    for sampler in (guided.DDIM(), guided.DPMSolver(), guided.Heun()):
        for steps in (10, 20, 40, 80, 160):
            cost = priors.Cost()
            x = sampler(prior, x_T, guided.time_grid(steps), cost=cost)
            error = float((x - reference).norm(dim=1).mean())
            print(f"{type(sampler).__name__:10s} {steps:6d} {cost.nfe:5.0f} {error:9.2e}")

    print("\nDDIM inversion round trip (256 exact samples, uniform grid, mean L2)")
    print("schedule            steps  iterations    error")
    for schedule in (priors.LinearSchedule(), priors.CosineSchedule(), priors.EDMSchedule()):
        prior = well_separated_mixture(2, schedule)
        x_0 = prior.sample(256, torch.Generator().manual_seed(0))
        for steps in (50, 100, 200):
            for iterations in (0, 2, 5):
                ts = guided.time_grid(steps)
                x_1 = guided.DDIMInversion(iterations)(prior, x_0, ts.flip(0))
                error = float((guided.DDIM()(prior, x_1, ts) - x_0).norm(dim=1).mean())
                print(f"{type(schedule).__name__:18s} {steps:6d} {iterations:11d} {error:9.2e}")


if __name__ == "__main__":
    main()
