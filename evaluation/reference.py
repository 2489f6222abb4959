r"""Reference solutions that a sampler's output is measured against.

:func:`probability_flow` solves the probability-flow ODE of a prior with an exact posterior
mean to high accuracy (scipy's DOP853, :math:`10^{-10}` tolerances), in the log-SNR
:math:`\lambda = \log(\alpha_t / \sigma_t)` for an :math:`\alpha = 1` schedule, where
:math:`dx / d\lambda = \hat{x}(x, t) - x`, and in the time itself for a
:class:`~priors.RectifiedSchedule`, where it is the flow-matching ODE :math:`dx / dt = \hat u
= \hat\epsilon - \hat x` (from pure noise at :math:`t = 1`): deterministic samplers converge
to it as their steps grow.
"""

from __future__ import annotations

import torch

from scipy.integrate import solve_ivp

import priors

from priors.tweedie import flow_from_x0

__all__ = ["probability_flow"]


def probability_flow(prior: priors.GaussianMixture, x_T: torch.Tensor) -> torch.Tensor:
    """High-accuracy probability-flow solution from t = 1 to t = 0, scipy's DOP853: for an
    alpha = 1 (EDM) schedule on dx/dlambda = E[x | x_t] - x in lambda = log(alpha / sigma); for
    a rectified schedule on dx/dt = u(x, t), the flow-matching velocity, in t."""
    schedule = prior.schedule
    if isinstance(schedule, priors.RectifiedSchedule):

        def flow(t: float, y: torch.Tensor) -> torch.Tensor:
            x, time = torch.from_numpy(y).reshape(x_T.shape), torch.tensor(t, dtype=torch.float64)
            u = flow_from_x0(x, prior(x, time), *schedule(time), *schedule.derivatives(time))
            return u.flatten().numpy()

        sol = solve_ivp(flow, (1.0, 0.0), x_T.flatten().numpy(), method="DOP853", rtol=1e-10,
                        atol=1e-10)  # fmt: skip
        if not sol.success:
            raise RuntimeError(f"the reference probability-flow solve failed: {sol.message}")
        return torch.from_numpy(sol.y[:, -1]).reshape(x_T.shape)
    if not bool((schedule(torch.tensor([0.0, 1.0]))[0] == 1).all()):
        raise ValueError(
            f"probability_flow solves alpha = 1 schedules and the rectified one, not "
            f"{type(schedule).__name__}"
        )

    def velocity(lam: float, y: torch.Tensor) -> torch.Tensor:
        t = schedule.time_of(torch.tensor(lam, dtype=torch.float64))
        x = torch.from_numpy(y).reshape(x_T.shape)
        return (prior(x, t) - x).flatten().numpy()

    span = (float(schedule.log_snr(1.0)), float(schedule.log_snr(0.0)))
    sol = solve_ivp(velocity, span, x_T.flatten().numpy(), method="DOP853", rtol=1e-10, atol=1e-10)
    if not sol.success:
        raise RuntimeError(f"the reference probability-flow solve failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1]).reshape(x_T.shape)
