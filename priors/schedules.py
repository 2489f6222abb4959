r"""Noise schedules.

A schedule maps the continuous time :math:`t \in [0, 1]` to the signal and noise scales
:math:`(\alpha_t, \sigma_t)` of the perturbation kernel

.. math:: p(x_t \mid x) = \mathcal{N}(x_t \mid \alpha_t x, \sigma_t^2 I),

with :math:`t = 0` (almost) clean data and :math:`t = 1` (almost) pure noise. The half
log signal-to-noise ratio :math:`\lambda_t = \log \alpha_t - \log \sigma_t` is strictly
decreasing in :math:`t`; samplers that work in :math:`\lambda` (DPM-Solver) or in the
variance-exploding noise level :math:`\tilde\sigma_t = \sigma_t / \alpha_t = e^{-\lambda_t}`
(Heun, Karras time grids) use :meth:`Schedule.log_snr` and its inverse
:meth:`Schedule.time_of`. The time derivatives :math:`(\dot\alpha_t, \dot\sigma_t)`
(:meth:`Schedule.derivatives`) turn a flow-matching velocity into a posterior mean
(:func:`priors.tweedie.x0_from_flow`).

On :class:`RectifiedSchedule` the signal vanishes at :math:`t = 1` (:math:`\alpha_1 = 0`,
:math:`\lambda_1 = -\infty`): :math:`x_1` is pure noise. Samplers that divide by
:math:`\alpha_t` refuse a grid that steps from such a time
(:attr:`guided.Sampler.pure_noise`).

All coefficients are computed in float64.
"""

from __future__ import annotations

import abc
import math

import torch

from torch import Tensor

import checks

__all__ = [
    "CosineSchedule",
    "DiscreteSchedule",
    "EDMSchedule",
    "LinearSchedule",
    "RectifiedSchedule",
    "Schedule",
    "as_time",
]


def as_time(t: float | Tensor) -> Tensor:
    r"""Validates a time and returns it as a float64 tensor of shape :math:`()` or :math:`(B,)`.

    Raises:
        ValueError: if ``t`` has more than one dimension, is not finite or leaves [0, 1].
    """
    if isinstance(t, str | bool) or (
        isinstance(t, Tensor) and (t.is_complex() or t.dtype == torch.bool)
    ):
        raise TypeError(f"t must be a real time in [0, 1], got {t!r}")
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.ndim > 1:
        raise ValueError(f"t must be a scalar or have shape (B,), got shape {tuple(t.shape)}")
    if not t.numel():
        return t
    # a scalar is read once (samplers validate one per call); min and max propagate NaN
    lo, hi = (float(t),) * 2 if t.ndim == 0 else (float(t.min()), float(t.max()))
    if not 0.0 <= lo <= hi <= 1.0:  # NaN fails every comparison
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"t must be finite, got {t}")
        raise ValueError(f"t must lie in [0, 1], got values in [{lo}, {hi}]")
    return t


class Schedule(abc.ABC):
    r"""Abstract noise schedule :math:`t \mapsto (\alpha_t, \sigma_t)`.

    Subclasses implement :meth:`alpha_sigma` on validated float64 times; calling the
    schedule validates ``t`` first. A schedule is immutable once built: the coefficients of
    a single CPU time (what a sampler asks for several times per step) are computed once
    and remembered (copies are returned).
    """

    _MEMO_SIZE = 4096

    def __call__(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        r"""
        Arguments:
            t: The time :math:`t \in [0, 1]`, a float or a tensor of shape :math:`()` or
                :math:`(B,)`.

        Returns:
            :math:`\alpha_t` and :math:`\sigma_t` in float64, each shaped like ``t``.
        """
        t = as_time(t)
        if t.ndim or t.requires_grad or t.device.type != "cpu":
            return self.alpha_sigma(t)
        memo = self.__dict__.setdefault("_memo", {})
        key = float(t)
        if key not in memo:
            if len(memo) >= self._MEMO_SIZE:
                memo.clear()
            memo[key] = self.alpha_sigma(t)
        alpha_t, sigma_t = memo[key]
        return alpha_t.clone(), sigma_t.clone()

    @abc.abstractmethod
    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Signal and noise scales at a validated float64 time ``t``."""

    def derivatives(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        r"""The time derivatives :math:`(\dot\alpha_t, \dot\sigma_t)` in float64, shaped like
        ``t``. The generic implementation differentiates :meth:`alpha_sigma` by autograd
        (one-sided where the schedule has a kink, as :class:`DiscreteSchedule` has at its
        nodes; infinite where :math:`\sigma_t \propto \sqrt{t}` at :math:`t = 0`)."""
        t = as_time(t)
        with torch.enable_grad():
            u = t.detach().clone().requires_grad_(True)
            alpha_t, sigma_t = self.alpha_sigma(u)
            rates = [
                torch.autograd.grad(c.sum(), u, retain_graph=True, allow_unused=True)[0]
                if c.requires_grad
                else None
                for c in (alpha_t, sigma_t)
            ]
        return tuple(torch.zeros_like(t) if r is None else r.detach() for r in rates)

    def log_snr(self, t: float | Tensor) -> Tensor:
        r"""The half log-SNR :math:`\lambda_t = \log(\alpha_t / \sigma_t)` (``+inf`` where
        :math:`\sigma_t = 0`)."""
        alpha_t, sigma_t = self(t)
        return torch.log(alpha_t) - torch.log(sigma_t)

    def time_of(self, log_snr: Tensor) -> Tensor:
        r"""Inverse of :meth:`log_snr`: the time :math:`t` with :math:`\lambda_t` = ``log_snr``.

        Values outside the schedule's range map to the nearest end, 0 or 1. The generic
        implementation bisects the strictly decreasing :math:`\lambda_t` to float64 precision.
        """
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        lo = torch.zeros_like(lam)
        hi = torch.ones_like(lam)
        for _ in range(64):
            mid = (lo + hi) / 2
            above = self.log_snr(mid.flatten()).reshape(mid.shape) > lam
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return (lo + hi) / 2


class DiscreteSchedule(Schedule):
    r"""A schedule given by a trained discrete table :math:`\bar\alpha_1 > \dots > \bar\alpha_N`.

    Discrete step :math:`n \in \{1, \dots, N\}` (index ``n - 1`` of a checkpoint's timestep
    embedding) sits at :math:`t = n / N`, and :math:`t = 0` is clean data
    (:math:`\bar\alpha_0 = 1`). Between nodes :math:`\log \bar\alpha` is interpolated
    linearly, so the table is reproduced exactly on its nodes and :math:`\lambda_t` stays
    strictly decreasing. :math:`\alpha_t = \sqrt{\bar\alpha_t}` and
    :math:`\sigma_t = \sqrt{1 - \bar\alpha_t}`.

    Arguments:
        alphas_cumprod: The table :math:`\bar\alpha_n`, with shape :math:`(N,)`, strictly
            decreasing in (0, 1).
    """

    def __init__(self, alphas_cumprod: Tensor) -> None:
        alphas_cumprod = torch.as_tensor(alphas_cumprod)
        if alphas_cumprod.is_complex():
            raise TypeError("alphas_cumprod must be real")
        alphas_cumprod = alphas_cumprod.to(torch.float64)
        if alphas_cumprod.ndim != 1 or alphas_cumprod.numel() < 1:
            raise ValueError("alphas_cumprod must be a non-empty 1-D table")
        if not bool(((alphas_cumprod > 0) & (alphas_cumprod < 1)).all()):
            raise ValueError("alphas_cumprod must lie strictly between 0 and 1")
        if alphas_cumprod.numel() > 1 and not bool((alphas_cumprod.diff() < 0).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing")
        self.alphas_cumprod = alphas_cumprod
        self.log_table = torch.cat([torch.zeros(1, dtype=torch.float64), alphas_cumprod.log()])

    @property
    def steps(self) -> int:
        """The number :math:`N` of trained steps."""
        return self.alphas_cumprod.numel()

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        table = self.log_table.to(t.device)
        u = t * self.steps
        i = u.floor().clamp(max=self.steps - 1).long()
        frac = u - i
        log_abar = (1 - frac) * table[i] + frac * table[i + 1]
        return torch.exp(log_abar / 2), torch.sqrt(torch.expm1(log_abar).abs())


class LinearSchedule(DiscreteSchedule):
    r"""The linear-beta DDPM schedule (Ho et al., 2020), :math:`\beta_n` evenly spaced from
    ``beta_start`` to ``beta_end`` over ``steps`` trained steps, :math:`\bar\alpha_n =
    \prod_{m \le n} (1 - \beta_m)`, continuous in :math:`t` by :class:`DiscreteSchedule`.

    References:
        | Denoising Diffusion Probabilistic Models (Ho et al., 2020)
        | https://arxiv.org/abs/2006.11239
    """

    def __init__(
        self, beta_start: float = 1e-4, beta_end: float = 0.02, steps: int = 1000
    ) -> None:
        beta_start = checks.number(beta_start, "beta_start", low=0, high=1, open_low=True)
        beta_end = checks.number(
            beta_end, "beta_end", low=0, high=1, open_low=True, open_high=True
        )
        if not beta_start <= beta_end:
            raise ValueError(f"need beta_start <= beta_end, got {beta_start} and {beta_end}")
        steps = checks.integer(steps, "steps", low=1)
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        super().__init__(torch.cumprod(1 - betas, dim=0))


class CosineSchedule(Schedule):
    r"""The cosine schedule of Nichol & Dhariwal (2021), in continuous time.

    .. math:: \alpha_t = \frac{\cos \phi_t}{\cos \phi_0}, \quad
        \sigma_t = \sqrt{1 - \alpha_t^2}, \quad
        \phi_t = \phi_0 + t (\phi_1 - \phi_0), \quad \phi_0 = \frac{s}{1 + s} \frac{\pi}{2}.

    The paper's end angle :math:`\phi_1 = \pi / 2` gives :math:`\alpha_1 = 0` (infinite
    log-SNR); instead :math:`\phi_1` is set so that :math:`\alpha_1` = ``alpha_min``, the
    continuous analogue of the paper's clipping of :math:`\beta` at 0.999.

    References:
        | Improved Denoising Diffusion Probabilistic Models (Nichol & Dhariwal, 2021)
        | https://arxiv.org/abs/2102.09672
    """

    def __init__(self, s: float = 0.008, alpha_min: float = 1e-3) -> None:
        s = checks.number(s, "s", low=0)
        alpha_min = checks.number(
            alpha_min, "alpha_min", low=0, high=1, open_low=True, open_high=True
        )
        self.phi_0 = s / (1 + s) * math.pi / 2
        self.phi_1 = math.acos(alpha_min * math.cos(self.phi_0))

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        phi = self.phi_0 + t * (self.phi_1 - self.phi_0)
        alpha_t = torch.cos(phi) / math.cos(self.phi_0)
        return alpha_t, torch.sqrt((1 - alpha_t**2).clamp(min=0))


class EDMSchedule(Schedule):
    r"""The variance-exploding schedule of Karras et al. (2022): :math:`\alpha_t = 1` and

    .. math:: \sigma_t = \left(\sigma_{min}^{1/\rho} + t (\sigma_{max}^{1/\rho} -
        \sigma_{min}^{1/\rho})\right)^\rho,

    so a uniform grid in :math:`t` is the EDM time discretisation.

    References:
        | Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022)
        | https://arxiv.org/abs/2206.00364
    """

    def __init__(
        self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
    ) -> None:
        sigma_min = checks.number(sigma_min, "sigma_min", low=0, open_low=True)
        sigma_max = checks.number(sigma_max, "sigma_max", low=0, open_low=True)
        if not sigma_min < sigma_max:
            raise ValueError(f"need sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        rho = checks.number(rho, "rho", low=0, open_low=True)
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a = self.sigma_min ** (1 / self.rho)
        b = self.sigma_max ** (1 / self.rho)
        return torch.ones_like(t), (a + t * (b - a)) ** self.rho

    def time_of(self, log_snr: Tensor) -> Tensor:
        a = self.sigma_min ** (1 / self.rho)
        b = self.sigma_max ** (1 / self.rho)
        sigma = torch.exp(-torch.as_tensor(log_snr, dtype=torch.float64))
        return ((sigma ** (1 / self.rho) - a) / (b - a)).clamp(0, 1)


class RectifiedSchedule(Schedule):
    r"""The rectified-flow schedule of flow matching: the straight line from data to noise,

    .. math:: \alpha_t = 1 - t, \qquad \sigma_t = t, \qquad x_t = (1 - t) x + t \epsilon,

    whose velocity :math:`\dot x_t = \epsilon - x` is what flow-matching networks predict
    (Stable Diffusion 3, Flux; :func:`priors.tweedie.x0_from_flow` turns it into
    :math:`\hat x = x_t - t \hat u`). The ends are exact: clean data at :math:`t = 0`
    (:math:`\lambda_0 = +\infty`) and pure noise at :math:`t = 1` (:math:`\alpha_1 = 0`,
    :math:`\lambda_1 = -\infty`), unlike azula's ``RectifiedSchedule``, which keeps
    :math:`\alpha_{min}, \sigma_{min} = 10^{-3}` at the ends. :meth:`time_of` inverts
    :math:`\lambda_t = \log((1 - t) / t)` in closed form, :math:`t = 1 / (1 + e^\lambda)`.

    References:
        | Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow
        | (Liu et al., 2023) https://arxiv.org/abs/2209.03003
        | Flow Matching for Generative Modeling (Lipman et al., 2023)
        | https://arxiv.org/abs/2210.02747
    """

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1 - t, t.clone()

    def derivatives(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        t = as_time(t)
        return -torch.ones_like(t), torch.ones_like(t)

    def time_of(self, log_snr: Tensor) -> Tensor:
        return torch.sigmoid(-torch.as_tensor(log_snr, dtype=torch.float64))
