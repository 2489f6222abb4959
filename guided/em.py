r"""Expectation-maximisation for operators with unknowns (Fast Diffusion EM).

An operator :math:`A_\theta` with unknown parameters :math:`\theta` (a blur kernel, sensor
gains, a channel mixing; see :class:`operators.UnknownOperator`) is estimated while sampling
the posterior of one measurement :math:`y`. At every network evaluation (Laroche et al.,
Alg. 2, "fast" EM):

- **M-step**: :math:`\theta \leftarrow \arg\min_{\theta \in \mathcal{C}} \frac{1}{2B\sigma_y^2}
  \sum_b \lVert y - A_\theta \hat x_b \rVert^2 + \frac{\lambda}{2} \lVert \theta \rVert^2
  + \frac{\mu}{2} \theta^\top R\, \theta`, with :math:`R` the operator's prior form
  (:meth:`~operators.UnknownOperator.penalty`: smoothness and centring of a kernel),
  with :math:`\hat x_b = E[x \mid x_t^{(b)}]` the prior's denoised estimate of each of the
  :math:`B` rows (posterior samples of the same measurement, pooled: a Monte Carlo E-step)
  and :math:`\mathcal{C}` the operator's constraint set (:meth:`~operators.UnknownOperator.
  project`), by :class:`LeastSquaresMStep` (exact, for operators linear in
  :math:`\theta`) or :class:`GradientMStep` (a few projected Adam steps, any operator);
- **E-step**: one guided step under the current estimate: the term (PiGDM by default,
  any :class:`~guided.guidance.Guidance` built as ``term(op, y, sigma_y, **kwargs)``) is
  evaluated with :math:`A_{\hat\theta}` frozen (:meth:`~operators.UnknownOperator.known`).

:class:`ExpectationMaximization` is a guidance term: ``GuidedDenoiser(prior, em)`` turns
every sampler into a blind posterior sampler, and stacks with other terms. Unlike other
terms it couples the rows of the batch (through the shared estimate) and keeps state: the
operator's parameters, updated explicitly by the M-step, and :attr:`trace` (one estimate
per M-step). Use one instance per measurement and run.

The M-step plugs in :math:`\hat x` rather than integrating over :math:`p(x \mid x_t, y)`,
as Fast Diffusion EM does; early estimates :math:`\hat x` are smooth, so M-steps can be
held back to :math:`t \leq` ``start`` (GibbsDDRM starts its kernel updates at 70% of the
run). :class:`DiffusionEM` instead alternates whole posterior samplings and M-steps (the
non-fast variant, Monte Carlo EM), so its M-steps see clean posterior samples.

Fast Diffusion EM regularises its kernel with a learned kernel denoiser; ours uses
the constraint set, a ridge :math:`\lambda` and the weight :math:`\mu` of the operator's
penalty (kernels of smooth images are otherwise ill-determined at high frequencies, and
drift by translation).

References:
    | Fast Diffusion EM: a diffusion model for blind inverse problems with application to
    | deconvolution (Laroche et al., WACV 2024) https://arxiv.org/abs/2309.00287
    | ArrayDPS: Unsupervised Blind Speech Separation with a Diffusion Prior
    | (Xu et al., ICML 2025) https://arxiv.org/abs/2505.05657
    | GibbsDDRM: A Partially Collapsed Gibbs Sampler for Solving Blind Inverse Problems with
    | Denoising Diffusion Restoration (Murata et al., ICML 2023) https://arxiv.org/abs/2301.12686
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from torch import Tensor

import checks

from guided.guidance import Guidance, GuidedDenoiser, check_measurement
from guided.m_step import LeastSquaresMStep, MStep, flat, unknowns
from guided.pigdm import PiGDM
from guided.sampler import Sampler
from operators import Operator, UnknownOperator
from priors import Cost, Denoiser, GeneratorLike, Schedule

__all__ = ["DiffusionEM", "ExpectationMaximization"]


def _check_problem(
    op: UnknownOperator,
    y: Tensor,
    sigma_y: float,
    term: Callable[..., Guidance],
    m_step: MStep | None,
    term_kwargs: dict[str, Any],
) -> tuple[Tensor, MStep]:
    """Validates an EM problem (both variants); returns the measurement :math:`(1, *)` and
    the M-step (exact least squares by default)."""
    if not isinstance(op, UnknownOperator):
        raise TypeError(
            f"expectation-maximisation estimates an operator's unknowns; "
            f"{type(op).__name__} has none (it is not an operators.UnknownOperator): "
            "guide with PiGDM or DPS directly"
        )
    if not unknowns(op):
        raise ValueError(f"{type(op).__name__} has no parameters left to estimate")
    y = check_measurement(op, y, sigma_y)
    if not checks.number(sigma_y, "sigma_y", low=0) > 0:
        raise ValueError("EM's M-step weighs the data by 1 / sigma_y^2: sigma_y must be > 0")
    if y.shape[0] != 1:
        raise ValueError(
            f"EM estimates one operator from one measurement; y has {y.shape[0]} rows "
            "(run one EM per measurement)"
        )
    if m_step is not None and not isinstance(m_step, MStep):
        raise TypeError(f"m_step must be a guided.MStep, got {type(m_step).__name__}")
    if m_step is not None:
        m_step.check(op)
    probe = term(op.known(), y, sigma_y, **term_kwargs)  # fails now if it cannot take op
    if not isinstance(probe, Guidance) or type(probe).vector is Guidance.vector:
        raise TypeError(
            f"the E-step term must be a guided.Guidance with a vector (as DPS and PiGDM); "
            f"got {type(probe).__name__}"
        )
    return y, LeastSquaresMStep() if m_step is None else m_step


class ExpectationMaximization(Guidance):
    r"""Blind posterior sampling of one measurement by expectation-maximisation (see the
    module).

    Arguments:
        op: The operator with unknowns, holding the initial estimate; the M-steps update
            its parameters in place.
        y: One measurement, :math:`(*out\_shape)` or :math:`(1, *out\_shape)`; every row of
            the batch is a posterior sample of it.
        sigma_y: The Gaussian noise level.
        term: The E-step's guidance, called as ``term(op, y, sigma_y, **term_kwargs)`` with
            the frozen estimate (PiGDM by default; e.g. ``guided.DPS`` with ``zeta=``).
        m_step: The M-step (exact least squares by default).
        start: M-steps happen at :math:`t \leq` ``start`` only (1: at every evaluation).
        term_kwargs: Passed to ``term``.

    Attributes:
        trace: ``(t, theta)`` after every M-step, :math:`\theta` flattened float64.
    """

    def __init__(
        self,
        op: UnknownOperator,
        y: Tensor,
        sigma_y: float,
        term: Callable[..., Guidance] = PiGDM,
        m_step: MStep | None = None,
        start: float = 1.0,
        **term_kwargs: Any,
    ) -> None:
        super().__init__()
        y, m_step = _check_problem(op, y, sigma_y, term, m_step, term_kwargs)
        start = checks.number(start, "start", low=0, high=1, open_low=True)
        self.op, self.y, self.sigma_y, self.m_step = op, y, float(sigma_y), m_step
        self.term, self.term_kwargs, self.start = term, term_kwargs, start
        self.trace: list[tuple[float, Tensor]] = []

    def vector(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        time = float(t.flatten()[0])
        if time <= self.start:
            self.m_step(self.op, x_hat.detach(), self.y, self.sigma_y)
            theta = flat(self.op)
            if not bool(torch.isfinite(theta).all()):
                raise FloatingPointError(f"the M-step gave non-finite unknowns at t = {time:.4g}")
            self.trace.append((time, theta))
        inner = self.term(self.op.known(), self.y, self.sigma_y, **self.term_kwargs)
        return inner.vector(x_t, t, x_hat, schedule)

    def estimate(self) -> Operator:
        """The current estimate, frozen."""
        return self.op.known()


class DiffusionEM:
    r"""Expectation-maximisation with whole posterior samplings as E-steps (the non-fast
    DiffEM of Laroche et al.; Monte Carlo EM).

    Round :math:`r` draws the rows of ``x_T`` to :math:`t = 0` under the current estimate
    :math:`A_{\theta_r}` (guided by ``term``, any sampler), then the M-step fits
    :math:`\theta_{r+1}` to those posterior samples. ``rounds`` M-steps make ``rounds + 1``
    samplings; the last one, under the final estimate, is returned. Costs ``rounds + 1``
    times a non-blind run. Unlike :class:`ExpectationMaximization`, every M-step sees clean
    posterior samples rather than the denoised estimates of noisy states, which are
    uninformative about a kernel until late in a run.

    How many rounds is prior-dependent (``python -m experiments.inverse.blind``, 30 DDIM steps, 4
    samples): on digits (8 images, 5x5 Gaussian blur) one M-step closes 90% of the PSNR
    gap between a wrong (Dirac) and the true kernel, two close 52%, and after four the
    estimate has drifted (wider than the truth) below the wrong kernel's PSNR; on textures
    (6 crops, 9x9 blur) the share grows with the rounds: 24%, 34%, 55% after 1, 2, 4. The
    fixed point of EM with an imperfect prior need not be the true kernel.

    Arguments:
        op: The operator with unknowns, holding the initial estimate (updated in place).
        y: One measurement, :math:`(*out\_shape)` or :math:`(1, *out\_shape)`.
        sigma_y: The Gaussian noise level (> 0).
        term: The E-step's guidance, ``term(op, y, sigma_y, **term_kwargs)``.
        m_step: The M-step (exact least squares by default).
        rounds: The number of M-steps (>= 1).

    Attributes:
        trace: :math:`\theta` flattened after every M-step.
    """

    def __init__(
        self,
        op: UnknownOperator,
        y: Tensor,
        sigma_y: float,
        term: Callable[..., Guidance] = PiGDM,
        m_step: MStep | None = None,
        rounds: int = 1,
        **term_kwargs: Any,
    ) -> None:
        y, m_step = _check_problem(op, y, sigma_y, term, m_step, term_kwargs)
        rounds = checks.integer(rounds, "rounds", low=1)
        self.op, self.y, self.sigma_y, self.m_step = op, y, float(sigma_y), m_step
        self.term, self.term_kwargs, self.rounds = term, term_kwargs, rounds
        self.trace: list[Tensor] = []

    def __call__(
        self,
        prior: Denoiser,
        sampler: Sampler,
        x_T: Tensor,
        ts: Tensor,
        *,
        generator: GeneratorLike = None,
        cost: Cost | None = None,
        **cond: Any,
    ) -> Tensor:
        """Runs the rounds from ``x_T`` (the same start every round); returns the samples
        of the last round, :math:`(B, *in\\_shape)`."""
        for r in range(self.rounds + 1):
            term = self.term(self.op.known(), self.y, self.sigma_y, **self.term_kwargs)
            x = sampler(
                GuidedDenoiser(prior, term), x_T, ts, generator=generator, cost=cost, **cond
            )
            if r == self.rounds:
                return x
            self.m_step(self.op, x, self.y, self.sigma_y)
            theta = flat(self.op)
            if not bool(torch.isfinite(theta).all()):
                raise FloatingPointError(f"the M-step of round {r + 1} gave non-finite unknowns")
            self.trace.append(theta)
        raise AssertionError("unreachable")
