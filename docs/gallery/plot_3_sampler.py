r"""
A sampler: one transition, the loop for free
============================================

A :class:`guided.Sampler` implements one transition :math:`x_t \mapsto x_s` in
:meth:`~guided.Sampler.step`, given the run (:class:`guided.Run`: the denoiser, the random
stream, the conditions), the transition with its coefficients (:class:`guided.Step`) and
its own state (:class:`guided.SamplerState`, empty here); the base class runs the loop,
with projections, callbacks, cost accounting, per-row generators and the NaN guard. Here
the exponential-integrator Euler step of the probability-flow ODE in the log-SNR
:math:`\lambda = \log(\alpha / \sigma)`, which holds :math:`\hat x` fixed over the step:

.. math:: x_s = \frac{\sigma_s}{\sigma_t} x_t + \Bigl(\alpha_s - \alpha_t
    \frac{\sigma_s}{\sigma_t}\Bigr) \hat x(x_t).

It is DDIM with :math:`\eta = 0` written another way, which the example checks, then it
measures the error against a high-accuracy solution of the same ODE
(:func:`evaluation.probability_flow`) as the steps grow: first order, like DDIM.
"""

import matplotlib.pyplot as plt
import torch

import guided
import priors

from evaluation import probability_flow, well_separated_mixture


class ExponentialEuler(guided.Sampler):
    """First-order exponential integrator of the probability-flow ODE."""

    def step(
        self, run: guided.Run, x_t: torch.Tensor, step: guided.Step, state: guided.SamplerState
    ) -> torch.Tensor:
        alpha_t, sigma_t, alpha_s, sigma_s = step.coefficients
        x_hat = run.denoise(x_t, step.t)
        ratio = sigma_s / sigma_t
        return ratio * x_t + (alpha_s - alpha_t * ratio) * x_hat


prior = well_separated_mixture(2, priors.EDMSchedule())
g = torch.Generator().manual_seed(0)
x_T = 80.0 * torch.randn(64, 2, generator=g, dtype=torch.float64)  # sigma_1 = 80

# %%
# The same transition as DDIM with eta = 0, to rounding:
ts = guided.time_grid(20)
torch.testing.assert_close(
    ExponentialEuler()(prior, x_T, ts), guided.DDIM()(prior, x_T, ts), rtol=1e-9, atol=1e-9
)

# %%
# Error against the reference solution of the probability-flow ODE, mean over 64 paths:
reference = probability_flow(prior, x_T)
steps = [5, 10, 20, 40, 80]
errors = {"exponential Euler (ours)": [], "Heun": []}
for n in steps:
    ts = guided.time_grid(n)
    for name, sampler in (
        ("exponential Euler (ours)", ExponentialEuler()),
        ("Heun", guided.Heun()),
    ):
        x = sampler(prior, x_T, ts)
        errors[name].append(float((x - reference).norm(dim=1).mean()))
fig, ax = plt.subplots(figsize=(4.5, 3.2))
for name, e in errors.items():
    ax.loglog(steps, e, "o-", label=name)
ax.set_xlabel("steps")
ax.set_ylabel("mean end-point error")
ax.legend(fontsize=8)
fig.tight_layout()
print({name: [f"{v:.2e}" for v in e] for name, e in errors.items()})
# halving the step roughly halves the error of a first-order method
assert errors["exponential Euler (ours)"][-1] < 0.7 * errors["exponential Euler (ours)"][-2]
