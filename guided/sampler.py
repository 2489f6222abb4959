r"""The sampler base class: one loop for every sampler.

A sampler walks a time grid :math:`t_0 > t_1 > \dots > t_N`; each subclass implements one
transition :meth:`Sampler.step` from :math:`t` to :math:`s`. The loop hands it the run
(:class:`Run`: the denoiser, the random stream, the conditions), the transition with the
schedule's coefficients computed once (:class:`Step`) and the sampler's own typed state
(a :class:`SamplerState` subclass from :meth:`Sampler.new_state`: multistep history,
particles). A sampler may override :meth:`Sampler.grid` to
adapt the time grid to its problem, :meth:`Sampler.pairs` to walk it otherwise (time
travel), and :meth:`Sampler.finish` to turn the last state into the output (a particle
sampler picks one particle per row). No sampler overrides the loop itself.
The loop, the optional post-step
:class:`~guided.projection.Projection`, callbacks, the progress bar, cost accounting and
the NaN guard (a step that produces NaN or Inf stops the run with an error naming the step,
its times and the guidance terms) live here and nowhere else.
"""

from __future__ import annotations

import abc
import itertools

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from torch import Tensor
from tqdm.auto import tqdm

import checks

from guided.guidance import check_rows
from guided.measurements import check_input_shapes, measurements, warn_if_far
from guided.projection import Projection
from guided.time import check_grid
from priors import (
    Cost,
    Denoiser,
    GeneratorLike,
    Schedule,
    all_finite,
    fixed_conditions,
    measure,
    randn,
    sampling_generator,
)

__all__ = ["Run", "Sampler", "SamplerState", "Step", "initial_noise"]


@dataclass(frozen=True)
class Run:
    """What every step of one run shares: the denoiser, the random stream (a generator,
    one per row, or None), the conditioning keywords and the validated time grid the run
    walks (``None`` for a step called outside a run)."""

    denoiser: Denoiser
    generator: GeneratorLike
    cond: Mapping[str, Any]
    grid: Tensor | None = None

    @property
    def schedule(self) -> Schedule:
        return self.denoiser.schedule

    def denoise(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The denoiser's posterior mean at ``(x_t, t)`` under the run's conditions."""
        return self.denoiser(x_t, t, **self.cond)


@dataclass(frozen=True)
class Step:
    r"""One transition :math:`t \to s` of a run (the ``index``-th of ``count``), with the
    schedule's coefficients at both times as Python floats, computed once by the loop."""

    index: int
    t: Tensor
    s: Tensor
    alpha_t: float
    sigma_t: float
    alpha_s: float
    sigma_s: float
    count: int = 1

    @property
    def coefficients(self) -> tuple[float, float, float, float]:
        r""":math:`(\alpha_t, \sigma_t, \alpha_s, \sigma_s)`."""
        return self.alpha_t, self.sigma_t, self.alpha_s, self.sigma_s


@dataclass
class SamplerState:
    """What a sampler keeps across the steps of one run: nothing here; samplers with memory
    (multistep history, particles) subclass it and return theirs from
    :meth:`Sampler.new_state`."""


class Sampler(abc.ABC):
    r"""Abstract sampler.

    Calling a sampler runs :meth:`step` over consecutive pairs of ``ts`` under
    ``torch.no_grad()`` (guidance wrappers re-enable gradients where they need them).
    Row :math:`i` of the output depends only on row :math:`i` of ``x_T`` and the noise drawn
    for row :math:`i`.
    """

    #: Whether the sampler walks time upwards (inversion) instead of from noise to data.
    increasing: ClassVar[bool] = False

    #: Whether :meth:`step` is defined where :math:`\alpha = 0` at one of its two times (pure
    #: noise: :math:`t = 1` on a :class:`~priors.RectifiedSchedule`). Samplers written in the
    #: variance-exploding variables :math:`x_t / \alpha_t` are not; a run refuses a grid that
    #: would make them divide by zero, naming the way out (start the grid below that time).
    pure_noise: ClassVar[bool] = False

    def new_state(self) -> SamplerState:
        """The state a run starts with (an empty :class:`SamplerState` by default)."""
        return SamplerState()

    @abc.abstractmethod
    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        r"""One transition :math:`x_t \mapsto x_s`.

        Arguments:
            run: The denoiser (possibly guided), the random stream and the conditions.
            x_t: The state at time ``step.t``, with shape :math:`(B, *)`.
            step: The transition: times ``t`` and ``s`` (float64, shape :math:`()`) and
                their coefficients.
            state: The sampler's state in this run (from :meth:`new_state`).

        Returns:
            The state at time ``step.s``, with shape :math:`(B, *)`.
        """

    def grid(self, ts: Tensor, schedule: Schedule) -> Tensor:
        r"""The grid a run walks, from the validated ``ts`` and the denoiser's schedule (``ts``
        itself by default; samplers that adapt the grid to their problem, such as MCGdiff,
        override this rather than the loop). It must stay a valid grid."""
        return ts

    def pairs(self, ts: Tensor) -> list[tuple[Tensor, Tensor]]:
        r"""The transitions :math:`(t, s)` a run makes on the validated grid ``ts``: the
        consecutive pairs by default (time-travel samplers go back up now and then)."""
        return list(itertools.pairwise(ts))

    def finish(self, run: Run, x: Tensor, state: SamplerState) -> Tensor:
        r"""Maps the state after the last step to the output (the identity by default)."""
        return x

    @torch.no_grad()
    def __call__(
        self,
        denoiser: Denoiser,
        x_T: Tensor,
        ts: Tensor,
        *,
        projection: Projection | None = None,
        callback: Callable[[int, Tensor, Tensor], None] | None = None,
        generator: GeneratorLike = None,
        progress: bool = False,
        cost: Cost | None = None,
        check_residual: bool = True,
        **cond: Any,
    ) -> Tensor:
        r"""Runs the sampler.

        Arguments:
            denoiser: The denoiser to sample from.
            x_T: The initial state at time ``ts[0]``, with shape :math:`(B, *)`.
            ts: The time grid, with shape :math:`(N + 1,)`, decreasing (increasing for
                inversion).
            projection: An optional correction applied after every step.
            callback: Called as ``callback(i, s, x_s)`` after transition ``i``.
            generator: A generator, or one generator per row of ``x_T``.
            progress: Whether to show a progress bar.
            cost: If given, the run's per-sample network evaluations and VJPs are added to
                it.
            check_residual: Whether to compute each measurement's residual after the run
                and warn (:class:`~guided.measurements.DivergenceWarning`) when a row ends
                far from it (one more call per row of each differentiable operator; see
                :mod:`guided.measurements`).
            cond: Conditioning keywords passed to the denoiser.

        Returns:
            The final state at time ``ts[-1]``, with the shape of ``x_T``.
        """
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser must be a priors.Denoiser, got {type(denoiser).__name__}")
        checks.real_tensor(x_T, "x_T")
        if x_T.ndim < 1 or x_T.shape[0] < 1:
            raise ValueError("x_T must be a tensor of shape (B, *) with B >= 1")
        checks.finite(x_T, "x_T")
        if projection is not None and not isinstance(projection, Projection):
            raise TypeError("projection must be a guided.Projection")
        per_row = generator is not None and not isinstance(generator, torch.Generator)
        if per_row and (not isinstance(generator, Sequence) or len(generator) != x_T.shape[0]):
            raise ValueError("generator must be a torch.Generator or one per row of x_T")
        check_rows(self, x_T.shape[0])
        found = measurements(self, denoiser, projection)
        check_input_shapes(x_T, found, denoiser=denoiser)
        check_residual = checks.flag(check_residual, "check_residual")
        ts = check_grid(ts, increasing=self.increasing)
        ts = check_grid(self.grid(ts, denoiser.schedule), increasing=self.increasing)
        state = self.new_state()
        run = Run(denoiser, generator, cond, ts)
        schedule = denoiser.schedule
        x = x_T
        pairs = self.pairs(ts)
        if not self.pure_noise:
            _check_signal(self, schedule, pairs)
        with (
            measure(cost if cost is not None else Cost(), batch=x_T.shape[0]),
            fixed_conditions(),
            sampling_generator(generator),
        ):
            for i, (t, s) in enumerate(tqdm(pairs, leave=False) if progress else pairs):
                (alpha_t, sigma_t), (alpha_s, sigma_s) = schedule(t), schedule(s)
                step = Step(
                    i, t, s, float(alpha_t), float(sigma_t), float(alpha_s), float(sigma_s),
                    len(pairs),
                )  # fmt: skip
                x = self.step(run, x, step, state)
                if projection is not None:
                    x = projection(x, s, denoiser.schedule, generator=generator)
                if not all_finite(x):  # the NaN guard: stop where it began
                    raise FloatingPointError(
                        f"{type(self).__name__} step {i + 1} of {len(pairs)} (t = {float(t):.4g}"
                        f" -> {float(s):.4g}) gave NaN or Inf with {_describe(denoiser)}"
                    )
                if callback is not None:
                    callback(i, s, x)
            x = self.finish(run, x, state)
        if check_residual and found and not self.increasing and float(ts[-1]) == 0:
            warn_if_far(x, found, type(self).__name__)
        return x


def _check_signal(
    sampler: Sampler, schedule: Schedule, pairs: Sequence[tuple[Tensor, Tensor]]
) -> None:
    r"""Refuses a walk that reaches a time where :math:`\alpha = 0` for a sampler whose steps
    divide by :math:`\alpha` (see :attr:`Sampler.pure_noise`)."""
    times = torch.stack([torch.stack(pair) for pair in pairs]).flatten()
    alpha, _ = schedule(times)
    if bool((alpha == 0).any()):
        top = float(times[alpha == 0].max())
        others = ", ".join(_pure_noise_samplers())
        raise ValueError(
            f"{type(sampler).__name__} divides by alpha_t, which is 0 at t = {top:g} on "
            f"{type(schedule).__name__} (pure noise): start the grid below it (e.g. "
            "ts = 0.999 * guided.time_grid(steps), x_T = guided.initial_noise(schedule, shape, "
            f"t=0.999)) or use a sampler that steps from pure noise ({others})"
        )


def _pure_noise_samplers() -> list[str]:
    """The public samplers of :mod:`guided` that step from pure noise (their flag)."""
    import guided  # the package, loaded by now (this module is one of its parts)

    return [
        f"guided.{name}"
        for name, item in ((name, getattr(guided, name)) for name in guided.__all__)
        if isinstance(item, type)
        and issubclass(item, Sampler)
        and item.pure_noise
        and not item.increasing
    ]


def _describe(denoiser: Denoiser) -> str:
    """The denoiser and, for a guided one, its terms (what the NaN guard names)."""
    terms = getattr(denoiser, "terms", None)
    if terms is None:
        return type(denoiser).__name__
    names = ", ".join(type(term).__name__ for term in terms)
    return f"{type(denoiser).__name__} ({names})"


def initial_noise(
    schedule: Schedule,
    shape: Sequence[int],
    generator: GeneratorLike = None,
    *,
    t: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""The usual sampler start :math:`x_t = \sigma_t \epsilon`, shape ``shape``.

    It neglects :math:`\alpha_t x`, which is small at :math:`t = 1`; where the prior's
    marginal is known exactly, start from it instead.
    """
    _, sigma_t = schedule(t)
    return float(sigma_t) * randn(shape, generator, dtype=dtype, device=device)
