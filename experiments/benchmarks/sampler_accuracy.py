"""Sampler accuracy on an exact Gaussian mixture: the figures quoted in the foundation issue.

    python -m experiments.benchmarks.sampler_accuracy

Prints (1) the mean end-point error of DDIM, DPM-Solver++ and Heun against a high-accuracy
probability-flow solution (scipy DOP853, rtol = atol = 1e-10) on a 2-D mixture under the EDM
schedule, by number of steps, and (2) the mean DDIM-inversion round-trip error (invert, then
sample on the same grid) by schedule, steps and fixed-point iterations. Plain script, no
Hydra: it has no configuration.
"""

from __future__ import annotations

import torch

import guided
import priors

from evaluation import probability_flow, well_separated_mixture


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
