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

import abc
import math

from collections.abc import Callable
from typing import Any

import torch

from torch import Tensor

import checks

from guided.guidance import Guidance, GuidedDenoiser, check_measurement
from guided.pigdm import PiGDM
from guided.sampler import Sampler
from operators import Operator, UnknownOperator
from priors import Cost, Denoiser, GeneratorLike, Schedule

__all__ = [
    "DiffusionEM",
    "ExpectationMaximization",
    "GradientMStep",
    "LeastSquaresMStep",
    "MStep",
]


def _unknowns(op: UnknownOperator) -> list[torch.nn.Parameter]:
    return [p for p in op.parameters() if p.requires_grad]


def _flat(op: UnknownOperator) -> Tensor:
    return torch.cat([p.detach().to(torch.float64).flatten() for p in _unknowns(op)])


@torch.no_grad()
def _assign(op: UnknownOperator, theta: Tensor) -> None:
    start = 0
    for p in _unknowns(op):
        p.copy_(theta[start : start + p.numel()].view_as(p))
        start += p.numel()


def _projected(op: UnknownOperator, theta: Tensor) -> Tensor:
    """:math:`\\Pi_{\\mathcal{C}}(\\theta)` through the operator's own projection."""
    _assign(op, theta)
    op.project()
    return _flat(op)


class MStep(abc.ABC):
    r"""Updates an operator's unknowns in place given denoised estimates :math:`\hat x`
    :math:`(B, *in\_shape)` of the same measurement :math:`y` :math:`(1, *out\_shape)` with
    noise level :math:`\sigma_y > 0`."""

    @abc.abstractmethod
    def __call__(self, op: UnknownOperator, x_hat: Tensor, y: Tensor, sigma_y: float) -> None: ...


class LeastSquaresMStep(MStep):
    r"""The exact M-step of an operator linear in its unknowns,
    :math:`A_\theta x = J(x)\,\theta`: the quadratic
    :math:`\frac{1}{2}\theta^\top G \theta - c^\top \theta` with
    :math:`G = \frac{1}{B\sigma_y^2}\sum_b J_b^\top J_b + \lambda I + \mu R`,
    :math:`c = \frac{1}{B\sigma_y^2}\sum_b J_b^\top y` (a MAP estimate: :math:`\lambda` and
    :math:`\mu` are prior precisions), minimised over the constraint set by
    accelerated projected gradient (FISTA, step :math:`1/\lVert G \rVert_2`) started from
    the projected unconstrained solution. :math:`J_b` is built column by column (one
    operator application per unknown, vectorised), in float64.

    Arguments:
        reg: The ridge :math:`\lambda \geq 0`.
        penalty: The weight :math:`\mu \geq 0` of the operator's
            :meth:`~operators.UnknownOperator.penalty`.
        iterations: Projected-gradient iterations (stops early once :math:`\theta` moves
            less than ``tol`` relative).
        tol: The relative stopping tolerance.
    """

    def __init__(
        self, reg: float = 0.0, penalty: float = 0.0, iterations: int = 200, tol: float = 1e-9
    ) -> None:
        self.reg = checks.number(reg, "reg", low=0)
        self.penalty = checks.number(penalty, "penalty", low=0)
        self.iterations = checks.integer(iterations, "iterations", low=1)
        self.tol = checks.number(tol, "tol", low=0)

    def jacobian(self, op: UnknownOperator, x: Tensor) -> Tensor:
        r""":math:`J(x)` :math:`(B, N_y, P)` for the current unknowns; raises if the operator
        is not linear in them."""
        params = {name: p for name, p in op.named_parameters() if p.requires_grad}
        theta = _flat(op)
        sizes = [p.numel() for p in params.values()]
        x = x.detach().to(torch.float64)

        def apply(flat: Tensor) -> Tensor:
            pieces = flat.split(sizes)
            values = {
                name: piece.view_as(p).to(p.dtype)
                for (name, p), piece in zip(params.items(), pieces, strict=True)
            }
            return torch.func.functional_call(op, values, (x,)).flatten(1)

        basis = torch.eye(len(theta), dtype=torch.float64, device=x.device)
        probes = torch.stack([theta, theta + 1])  # linear maps agree with J at both
        with torch.no_grad():
            columns = torch.func.vmap(apply)(basis)  # (P, B, N_y)
            values = torch.func.vmap(apply)(probes).to(torch.float64)
        jacobian = columns.permute(1, 2, 0)
        rebuilt = torch.einsum("bnp,kp->kbn", jacobian, probes)
        if not torch.allclose(rebuilt, values, rtol=1e-6, atol=1e-8 * (1 + values.abs().max())):
            raise ValueError(
                f"LeastSquaresMStep needs an operator linear in its unknowns; "
                f"{type(op).__name__} is not (use GradientMStep)"
            )
        return jacobian

    @torch.no_grad()
    def __call__(self, op: UnknownOperator, x_hat: Tensor, y: Tensor, sigma_y: float) -> None:
        jacobian = self.jacobian(op, x_hat)
        rows, p = jacobian.shape[0], jacobian.shape[-1]
        y = y.detach().to(torch.float64).flatten(1)
        eye = torch.eye(p, dtype=torch.float64, device=jacobian.device)
        precision = 1 / (rows * sigma_y**2)
        gram = precision * torch.einsum("bnp,bnq->pq", jacobian, jacobian) + self.reg * eye
        if self.penalty:
            gram = gram + self.penalty * op.penalty().to(gram.device)
        linear = precision * torch.einsum("bnp,bn->p", jacobian, y.expand(rows, -1))
        lipschitz = float(torch.linalg.eigvalsh(gram)[-1])
        if not lipschitz > 0:
            return  # the estimates carry no information about the unknowns (x_hat = 0)
        start = torch.linalg.lstsq(gram, linear[:, None]).solution[:, 0]
        theta = z = _projected(op, start)
        momentum = 1.0
        for _ in range(self.iterations):
            step = _projected(op, z - (gram @ z - linear) / lipschitz)
            next_momentum = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
            z = step + (momentum - 1) / next_momentum * (step - theta)
            moved = float((step - theta).norm()) / max(float(step.norm()), 1e-30)
            theta, momentum = step, next_momentum
            if moved < self.tol:
                break
        _assign(op, theta)


class GradientMStep(MStep):
    r"""A few projected Adam steps on the M-step objective of :class:`LeastSquaresMStep`
    (any differentiable operator, also non-linear in :math:`\theta`); the optimiser
    restarts at every M-step.

    Arguments:
        steps: Adam steps per M-step.
        lr: Adam's learning rate.
        reg: The ridge :math:`\lambda \geq 0`.
        penalty: The weight :math:`\mu \geq 0` of the operator's penalty.
    """

    def __init__(
        self, steps: int = 20, lr: float = 1e-2, reg: float = 0.0, penalty: float = 0.0
    ) -> None:
        self.steps = checks.integer(steps, "steps", low=1)
        self.lr = checks.number(lr, "lr", low=0, open_low=True)
        self.reg = checks.number(reg, "reg", low=0)
        self.penalty = checks.number(penalty, "penalty", low=0)

    def __call__(self, op: UnknownOperator, x_hat: Tensor, y: Tensor, sigma_y: float) -> None:
        unknowns = _unknowns(op)
        form = op.penalty() if self.penalty else None
        optimiser = torch.optim.Adam(unknowns, lr=self.lr)
        x_hat, y = x_hat.detach(), y.detach()
        with torch.enable_grad():
            for _ in range(self.steps):
                optimiser.zero_grad()
                residual = (y.to(x_hat.dtype) - op(x_hat)).flatten(1)
                loss = residual.square().sum(1).mean() / (2 * sigma_y**2)
                theta = torch.cat([p.to(torch.float64).flatten() for p in unknowns])
                loss = loss + self.reg / 2 * theta.square().sum()
                if form is not None:
                    loss = loss + self.penalty / 2 * theta @ form.to(theta.device) @ theta
                loss.backward()
                optimiser.step()
                op.project()
        for p in unknowns:
            p.grad = None


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
    if not _unknowns(op):
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
        raise TypeError(f"m_step must be a guided.em.MStep, got {type(m_step).__name__}")
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
            theta = _flat(self.op)
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

    How many rounds is prior-dependent (``python -m experiments.blind``, 30 DDIM steps, 4
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
            theta = _flat(self.op)
            if not bool(torch.isfinite(theta).all()):
                raise FloatingPointError(f"the M-step of round {r + 1} gave non-finite unknowns")
            self.trace.append(theta)
        raise AssertionError("unreachable")
