r"""
A flow-matching prior: a velocity field behind the denoiser contract
====================================================================

A flow-matching network predicts the velocity :math:`\hat u = E[\epsilon - x \mid x_t]` of
:math:`x_t = (1 - t) x + t \epsilon` (the :class:`priors.RectifiedSchedule` of Stable
Diffusion 3 and Flux). :class:`priors.FlowDenoiser` turns it into the posterior mean
:math:`\hat x = x_t - t \hat u`, so every sampler and guidance rule runs on it. Here the
velocity field is the exact one of a 2-D Gaussian mixture
(:meth:`priors.GaussianMixture.velocity`): Heun on the velocity ODE samples the prior from
pure noise, and PiGDM, written for diffusion priors, runs on the flow prior unchanged to
sample the posterior of a noisy first coordinate, beside draws of the exact posterior (PiGDM's
Gaussian approximation of :math:`p(x \mid x_t)` is exact for a Gaussian prior, not for this
mixture, so the two differ: the benchmark pages measure by how much).
"""

import matplotlib.pyplot as plt
import torch

import guided
import operators
import priors

from evaluation import well_separated_mixture

mixture = well_separated_mixture(2, priors.RectifiedSchedule())
flow = priors.FlowDenoiser(mixture.velocity, mixture.schedule, mixture.shape)
g = torch.Generator().manual_seed(0)
x_T = guided.initial_noise(flow.schedule, (2000, 2), g, dtype=torch.float64)  # t = 1

# %%
# The prior, by Heun's method on dx/dt = u over SD3's shifted grid (30 steps, 59 NFE):
ts = guided.time_grid(30, "shifted", shift=3.0)
cost = priors.Cost()
prior_samples = guided.FlowHeun()(flow, x_T, ts, cost=cost)
print(f"Heun: {cost.nfe:.0f} NFE per sample")

# %%
# The posterior of y = x_1 + 0.3 n by PiGDM on the flow prior (DDPM steps from pure noise,
# 100 steps), against the exact posterior's draws:
op = operators.MatrixOperator(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
y = torch.tensor([[2.0]], dtype=torch.float64)
term = guided.PiGDM(op, y, 0.3)
posterior = guided.DDPM()(
    guided.GuidedDenoiser(flow, term), x_T, guided.time_grid(100, "shifted", shift=3.0),
    generator=torch.Generator().manual_seed(1),
)  # fmt: skip
exact = mixture.posterior(op, y[0], 0.3).sample(2000, torch.Generator().manual_seed(2))
print(f"posterior mean: PiGDM {posterior.mean(0).tolist()}, exact {exact.mean(0).tolist()}")

fig, axes = plt.subplots(1, 2, figsize=(7, 3.5), sharex=True, sharey=True)
axes[0].scatter(*prior_samples.T, s=1, label="Heun on the flow")
axes[0].set_title("prior", fontsize=9)
axes[1].scatter(*exact.T, s=1, label="exact posterior", alpha=0.5)
axes[1].scatter(*posterior.T, s=1, label="PiGDM on the flow", alpha=0.5)
axes[1].set_title("posterior given x_1 = 2 (sigma_y 0.3)", fontsize=9)
axes[1].legend(fontsize=7, markerscale=5)
fig.tight_layout()
