r"""Time grids :math:`1 = t_0 > t_1 > \dots > t_N = 0` for samplers.

- ``"uniform"``: :math:`t_i = 1 - i / N`.
- ``"quadratic"``: :math:`t_i = (1 - i / N)^2`, denser near the data (Song et al., 2021,
  DDIM's quadratic skip).
- ``"karras"``: the :math:`\rho`-spacing of Karras et al. (2022) in the variance-exploding
  noise level :math:`\tilde\sigma_t = \sigma_t / \alpha_t` of the given schedule,

  .. math:: \tilde\sigma_i = \left(\tilde\sigma_{max}^{1/\rho} + \tfrac{i}{N}
      (\tilde\sigma_{min}^{1/\rho} - \tilde\sigma_{max}^{1/\rho})\right)^\rho,

  with :math:`\tilde\sigma_{max} = \tilde\sigma_1` and :math:`\tilde\sigma_{min}` =
  ``sigma_min`` (0.002, as in the paper), mapped back to times with
  :meth:`~priors.Schedule.time_of`, followed by a last step to :math:`t = 0`. A
  ``sigma_max`` below :math:`\tilde\sigma_1` starts the spacing there, after the grid's first
  point :math:`t = 1` (whose step jumps down to it); on a schedule whose
  :math:`\tilde\sigma_1` is infinite (pure noise at :math:`t = 1`, a
  :class:`~priors.RectifiedSchedule`) ``sigma_max`` defaults to the paper's 80. A schedule
  whose own :math:`\tilde\sigma_0` is at least ``sigma_min`` ends the spacing there
  instead; on an :class:`~priors.EDMSchedule` with the same :math:`\rho` and
  :math:`\sigma_{min}` the grid is therefore uniform in :math:`t`.
- ``"linear_beta"``: uniform in the time :math:`u` of the variance-preserving SDE with linear
  :math:`\beta(u) = \beta_{min} + u (\beta_{max} - \beta_{min})`, :math:`\beta_{min} = 0.1`,
  :math:`\beta_{max} = 20` (Song et al., 2021, the continuous limit of DDPM's linear schedule),
  whose variance-exploding noise level is

  .. math:: \tilde\sigma(u)^2 = \exp\left(\beta_{min} u + \tfrac12 (\beta_{max} -
      \beta_{min}) u^2\right) - 1 ,

  mapped to the given schedule's times by that level, :math:`t_i` =
  :meth:`~priors.Schedule.time_of` :math:`(-\log \tilde\sigma(u_i))`, :math:`u_i = u_0 (1 -
  i / N)`, with :math:`u_0 = 1` (:math:`\tilde\sigma = 152`) unless the schedule's largest
  level is smaller, where :math:`u_0` is the time of that level (and :math:`t_0 = 1`). This is
  the grid deepinv's diffusion-SDE samplers (``deepinv.sampling.DPS`` with its ``"vp"``
  schedule) take on any prior. Against ``"uniform"`` on a cosine schedule it moves steps to
  large noise levels: at 100 steps on the shipped digits prior (top level 1000) 33 of its
  levels are above 10 where the uniform grid has 7 (it goes from 1000 to 60 in its first
  step, where this grid goes from 152 to 138).
- ``"shifted"``: the resolution-dependent time shift of Stable Diffusion 3 (Esser et al.,
  2024) applied to the uniform grid, :math:`t_i = s u_i / (1 + (s - 1) u_i)`, :math:`u_i = 1 -
  i / N`, with ``shift`` :math:`s` (diffusers' ``FlowMatchEulerDiscreteScheduler`` reads it
  from its config; the FlowDPS authors set 4 for SD3; Flux's depends on the image size:
  ``prior.shift`` of :func:`priors.flux.load_flux`). On a :class:`~priors.RectifiedSchedule`
  (:math:`\tilde\sigma = t / (1 - t)`) it multiplies every noise level by :math:`s`, so
  :math:`s > 1` moves steps to higher noise.
  diffusers' ``FlowMatchEulerDiscreteScheduler`` shifts a grid that ends at its smallest
  training time (:math:`10^{-3}`, shifted) before the final jump to 0, rather than at
  :math:`1/N`: pass its times as ``ts`` to reproduce it step for step.

References:
    | Denoising Diffusion Implicit Models (Song et al., 2021)
    | https://arxiv.org/abs/2010.02502
    | Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022)
    | https://arxiv.org/abs/2206.00364
    | Score-Based Generative Modeling through Stochastic Differential Equations (Song et al., 2021)
    | https://arxiv.org/abs/2011.13456
    | Scaling Rectified Flow Transformers for High-Resolution Image Synthesis (Esser et al., 2024)
    | https://arxiv.org/abs/2403.03206
"""

from __future__ import annotations

import math

import torch

from torch import Tensor

import checks

from priors import Schedule

__all__ = ["check_grid", "level_times", "time_grid"]

KINDS = ("uniform", "quadratic", "karras", "linear_beta", "shifted")

#: Karras et al.'s :math:`\tilde\sigma_{max}`, where ``"karras"`` starts on a schedule whose own
#: largest level is infinite.
KARRAS_SIGMA_MAX = 80.0

#: :math:`\beta_{min}` and :math:`\beta_{max}` of the ``"linear_beta"`` grid.
BETA_MIN, BETA_MAX = 0.1, 20.0


def time_grid(
    steps: int,
    kind: str = "uniform",
    *,
    schedule: Schedule | None = None,
    rho: float = 7.0,
    sigma_min: float = 0.002,
    sigma_max: float | None = None,
    shift: float = 3.0,
) -> Tensor:
    r"""A decreasing float64 time grid of shape :math:`(steps + 1,)` from 1 to 0.

    Arguments:
        steps: The number :math:`N \ge 1` of sampler steps.
        kind: ``"uniform"``, ``"quadratic"``, ``"karras"``, ``"linear_beta"`` or
            ``"shifted"``.
        schedule: The schedule whose noise levels ``"karras"`` spaces and whose times
            ``"linear_beta"`` maps its levels to (required for both).
        rho: The exponent :math:`\rho > 0` of ``"karras"``.
        sigma_min: The smallest non-zero noise level :math:`\tilde\sigma_{min}` of
            ``"karras"`` (raised to the schedule's own minimum when that is larger).
        sigma_max: The largest level :math:`\tilde\sigma_{max}` that ``"karras"`` spaces
            from (None: the schedule's own, or 80 where that is infinite; one at or above
            the schedule's own is lowered to it).
        shift: The shift :math:`s > 0` of ``"shifted"``.
    """
    steps = checks.integer(steps, "steps", low=1)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    u = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    if kind == "uniform":
        return u
    if kind == "quadratic":
        return u**2
    if kind == "shifted":
        shift = checks.number(shift, "shift", low=0, open_low=True)
        return shift * u / (1 + (shift - 1) * u)
    if schedule is None:
        raise ValueError(f"the {kind!r} grid needs the schedule whose noise levels it spaces")
    if kind == "linear_beta":
        return _linear_beta(steps, schedule)
    rho = checks.number(rho, "rho", low=0, open_low=True)
    sigma_min = checks.number(sigma_min, "sigma_min", low=0, open_low=True)
    sigma_top, sigma_lo = torch.exp(-schedule.log_snr(torch.tensor([1.0, 0.0]))).tolist()
    if sigma_max is None and not math.isfinite(sigma_top):
        sigma_max = KARRAS_SIGMA_MAX
    if sigma_max is not None:
        sigma_max = checks.number(sigma_max, "sigma_max", low=0, open_low=True)
    jump = sigma_max is not None and sigma_max < sigma_top  # t = 1, then the spacing
    sigma_hi = sigma_max if jump else sigma_top
    if sigma_min >= sigma_hi:
        raise ValueError(f"sigma_min={sigma_min} is not below the largest level {sigma_hi}")
    # The last point is t = 0; it is a rho-spaced point only when the schedule stops above
    # sigma_min (EDM), otherwise the final step jumps from sigma_min to t = 0.
    n = (steps + 1 if sigma_lo >= sigma_min else steps) - jump
    lo = max(sigma_lo, sigma_min) ** (1 / rho)
    hi = sigma_hi ** (1 / rho)
    u = torch.linspace(1, 0, n, dtype=torch.float64)
    ts = schedule.time_of(-rho * torch.log(lo + u * (hi - lo))).to(torch.float64)
    ts = torch.cat([torch.ones(int(jump), dtype=torch.float64), ts])
    ts = torch.cat([ts, torch.zeros(steps + 1 - len(ts), dtype=torch.float64)])
    ts[0], ts[-1] = 1.0, 0.0
    return ts


def level_times(
    schedule: Schedule, top: float, bottom: float, steps: int, rho: float = 7.0
) -> Tensor:
    r"""The times of ``steps + 1`` noise levels :math:`\tilde\sigma = \sigma_t / \alpha_t`
    spaced as in ``"karras"`` from ``top`` down to ``bottom``, float64 of shape
    :math:`(steps + 1,)`: the inner grids of samplers that descend from a level of their own
    (DAPS's inner ODE, PnP-DM's prior step). Levels outside the schedule's range map to its
    ends (:meth:`~priors.Schedule.time_of`)."""
    top = checks.number(top, "top", low=0, open_low=True)
    bottom = checks.number(bottom, "bottom", low=0, open_low=True)
    if bottom >= top:
        raise ValueError(f"bottom={bottom} must be below top={top}")
    u = torch.linspace(0, 1, checks.integer(steps, "steps", low=1) + 1, dtype=torch.float64)
    levels = (top ** (1 / rho) + u * (bottom ** (1 / rho) - top ** (1 / rho))) ** rho
    return schedule.time_of(-torch.log(levels))


def _log_level(u: Tensor) -> Tensor:
    r""":math:`\log \tilde\sigma(u)` of the linear-beta SDE (see the module)."""
    return 0.5 * torch.log(torch.expm1(BETA_MIN * u + 0.5 * (BETA_MAX - BETA_MIN) * u**2))


def _linear_beta(steps: int, schedule: Schedule) -> Tensor:
    """The ``"linear_beta"`` grid of the module on ``schedule``."""
    top = -float(schedule.log_snr(torch.tensor(1.0, dtype=torch.float64)))
    u0 = 1.0
    if top < float(_log_level(torch.tensor(1.0, dtype=torch.float64))):
        # the SDE's time of the schedule's top level: solve the quadratic in u
        b = math.log1p(math.exp(2 * top))  # beta_min u + (beta_max - beta_min) u^2 / 2
        half = 0.5 * (BETA_MAX - BETA_MIN)
        u0 = (-BETA_MIN + math.sqrt(BETA_MIN**2 + 4 * half * b)) / (2 * half)
    u = u0 * torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1]
    ts = torch.cat([schedule.time_of(-_log_level(u)).to(torch.float64), u.new_zeros(1)])
    if u0 < 1:  # started at the schedule's top level: its time is 1 exactly
        ts[0] = 1.0
    if not bool((ts.diff() < 0).all()):
        raise ValueError(
            f"the 'linear_beta' grid of {steps} steps has levels below the schedule's smallest "
            "non-zero one, where two of its times coincide: use fewer steps or another kind"
        )
    return ts


def check_grid(ts: Tensor, increasing: bool = False) -> Tensor:
    """Validates a sampler's time grid and returns it as float64 on the CPU."""
    if not isinstance(ts, Tensor):
        ts = torch.as_tensor(ts)
    ts = ts.detach().to("cpu", torch.float64)
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"ts must be 1-D with at least 2 times, got shape {tuple(ts.shape)}")
    if not bool(torch.isfinite(ts).all()) or float(ts.min()) < 0 or float(ts.max()) > 1:
        raise ValueError("ts must be finite and lie in [0, 1]")
    steps = ts.diff()
    if increasing and not bool((steps > 0).all()):
        raise ValueError("ts must be strictly increasing for this sampler")
    if not increasing and not bool((steps < 0).all()):
        raise ValueError("ts must be strictly decreasing (from noise to data)")
    return ts
