r"""Reference solutions that a sampler's output is measured against.

:func:`probability_flow` solves the probability-flow ODE of a prior with an exact posterior
mean to high accuracy (scipy's DOP853, :math:`10^{-10}` tolerances), in the log-SNR
:math:`\lambda = \log(\alpha_t / \sigma_t)` for an :math:`\alpha = 1` schedule, where
:math:`dx / d\lambda = \hat{x}(x, t) - x`: deterministic samplers converge to it as their
steps grow.
"""

from __future__ import annotations

import torch

from scipy.integrate import solve_ivp

import priors

__all__ = ["probability_flow"]


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
