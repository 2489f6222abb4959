"""Building library objects from Hydra config nodes."""

from __future__ import annotations

import inspect

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

import checks
import guided
import priors

from experiments.shared.metrics import non_finite
from experiments.shared.seeds import generators
from priors import GeneratorLike


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that surfaces the library's own error.

    Hydra wraps exceptions raised by a ``_target_``'s constructor; a bad config value
    should reach the user as the library's ``ValueError``/``TypeError`` naming the
    parameter, so the wrapped exception is re-raised as it was.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ValueError | TypeError):
            raise cause from None
        raise


def _call_with_accepted(factory: Any, **runtime: Any) -> Any:
    """Calls a partial with the runtime keywords its target accepts."""
    target = getattr(factory, "func", factory)
    accepted = inspect.signature(target).parameters
    return factory(**{k: v for k, v in runtime.items() if k in accepted})


@dataclass
class Method:
    """A configured restoration method: a sampler run on a (possibly guided) denoiser, with
    an optional post-step projection, on a time grid of kind ``grid``
    (:func:`guided.time_grid`); or a peer's own loop (``peer``), called the same way (it
    takes only the number of steps from the grid). On a :class:`priors.LatentPrior` the run
    starts from latent noise and its latents are decoded (one decoder pass per sample,
    counted), so callers see images either way."""

    sampler: Any
    denoiser: priors.Denoiser
    projection: guided.Projection | None = None
    grid: str = "uniform"
    grid_sigma_min: float | None = None

    def times(self, steps: int) -> Tensor:
        """The method's time grid of ``steps`` steps on its prior's schedule (a ``karras``
        grid down to ``grid_sigma_min`` when given)."""
        floor = {} if self.grid_sigma_min is None else {"sigma_min": self.grid_sigma_min}
        return guided.time_grid(steps, self.grid, schedule=self.denoiser.schedule, **floor)

    @property
    def latent(self) -> priors.LatentPrior | None:
        """The latent prior the method samples from, or None for a pixel prior."""
        return priors.latent_of(self.denoiser)

    def initial_noise(
        self,
        shape: tuple[int, ...],
        generator: GeneratorLike,
        ts: Tensor,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """The run's start on the grid ``ts`` (:meth:`times`): :func:`guided.initial_noise` at
        the grid's first time, which is below 1 on a ``linear_beta`` grid of a schedule
        reaching past its top. ``shape`` is the images' (rows first); on a latent prior
        the noise has the latents' shape."""
        if self.latent is not None:
            shape = (shape[0], *self.latent.shape)
        return guided.initial_noise(
            self.denoiser.schedule, shape, generator, t=float(ts[0]), dtype=dtype
        )

    def __call__(
        self,
        x_T: Tensor,
        ts: Tensor,
        generator: GeneratorLike,
        cost: priors.Cost,
        step: Callable[[], object] | None = None,
    ) -> Tensor:
        """Samples from ``x_T`` on the grid ``ts``; ``step()`` is called after each of our
        samplers' transitions (a peer's loop reports nothing)."""
        if isinstance(self.sampler, guided.Sampler):
            x = self.sampler(
                self.denoiser,
                x_T,
                ts,
                projection=self.projection,
                generator=generator,
                cost=cost,
                callback=None if step is None else lambda i, s, x: step(),
            )
        else:
            x = self.sampler(self.denoiser, x_T, ts, generator=generator, cost=cost)
        if self.latent is None:
            return x
        with torch.no_grad(), priors.measure(cost, x.shape[0]):
            return self.latent.decode(x)


def build_method(node: DictConfig, prior: priors.Denoiser, **runtime: Any) -> Method:
    """Builds a method node: ``sampler`` (a Sampler, or a partial given whichever of the
    runtime keywords ``op``, ``y``, ``sigma_y`` it accepts), an optional ``guidance`` term
    (partial, same keywords) wrapped around ``prior``, an optional ``projection`` (partial),
    an optional ``grid`` (a kind of :func:`guided.time_grid`, ``uniform`` when absent) with,
    for a ``karras`` grid, an optional ``grid_sigma_min`` (its smallest non-zero noise
    level); or ``peer``, a partial returning a callable ``(denoiser, x_T, ts, generator,
    cost)``."""
    grid = node.get("grid")
    if grid is not None and grid not in guided.time.KINDS:
        raise ValueError(f"a method's grid must be one of {guided.time.KINDS}, got {grid!r}")
    floor = node.get("grid_sigma_min")
    if floor is not None:
        if grid != "karras":
            raise ValueError(f"grid_sigma_min applies to a karras grid only, not {grid!r}")
        floor = checks.number(floor, "grid_sigma_min", low=0, open_low=True)
    if node.get("peer") is not None:
        if grid is not None:
            raise ValueError("a peer runs its own time grid: give it no `grid`")
        return Method(_call_with_accepted(build(node.peer), **runtime), prior)
    if node.get("sampler") is None:
        raise ValueError("a method needs a `sampler` (or a `peer`)")
    sampler = build(node.sampler)
    if callable(sampler) and not isinstance(sampler, guided.Sampler):
        sampler = _call_with_accepted(sampler, **runtime)
    if not isinstance(sampler, guided.Sampler):
        raise TypeError(f"the method's sampler built {type(sampler).__name__}, not a Sampler")
    denoiser = prior
    if node.get("guidance") is not None:
        term = build(node.guidance)
        if not isinstance(term, guided.Guidance):
            term = _call_with_accepted(term, **runtime)
        denoiser = guided.GuidedDenoiser(prior, term)
    projection = None
    if node.get("projection") is not None:
        projection = _call_with_accepted(build(node.projection), **runtime)
        if not isinstance(projection, guided.Projection):
            raise TypeError(f"projection built {type(projection).__name__}, not a Projection")
    return Method(sampler, denoiser, projection, "uniform" if grid is None else str(grid), floor)


def space_mismatch(method: Method, prior: priors.Denoiser) -> str | None:
    """Why ``method`` cannot run on ``prior``, or None: a latent method (``guided.LatentDPS``,
    ``PSLD``, ``ReSample``, ``LatentDAPS``) needs a :class:`priors.LatentPrior`, and on one a
    method that measures pixels must be a latent method (an unguided sampler runs on
    either)."""
    latent = priors.latent_of(prior) is not None
    if isinstance(method.sampler, guided.latent.LatentMethod):
        if latent:
            return None
        return (
            f"{method.sampler.method} samples a latent prior's latents; on this pixel prior use "
            f"{method.sampler.instead}"
        )
    measures = (
        not isinstance(method.sampler, guided.Sampler)  # a peer's loop
        or isinstance(method.denoiser, guided.GuidedDenoiser)
        or "op" in inspect.signature(type(method.sampler).__init__).parameters
    )
    if latent and measures:
        return (
            "a pixel-space method on a latent prior: use latent_dps_taper, psld_taper, "
            "latent_daps, resample, latent_dps or psld (guided.LatentDPS, PSLD, LatentDAPS, "
            "ReSample)"
        )
    return None


def run_seeded(
    method: Method, shape: tuple[int, ...], ts: Tensor, seed: int, cost: priors.Cost
) -> tuple[Tensor | None, str | None]:
    """One restoration of shape ``shape`` (rows, then the image's) on the grid ``ts`` from the
    noise seed ``seed``: the initial noise (at the grid's first time) from the streams
    ``(seed, 1)``, the sampler's from ``(seed, 2)``, as the bench and the tuning app draw them.
    Returns the output and None, or None and why the run diverged (it raised
    FloatingPointError, or returned NaN or infinity)."""
    rows = shape[0]
    x_T = method.initial_noise(tuple(shape), generators(seed, rows, 1), ts)
    try:
        x = method(x_T, ts, generators(seed, rows, 2), cost)
    except FloatingPointError as error:
        return None, str(error)
    reason = non_finite(x)
    return (None, reason) if reason is not None else (x, None)
