r"""The denoiser interface.

A denoiser returns the posterior mean :math:`\hat x(x_t, t) = E[x \mid x_t]` under a
:class:`~priors.schedules.Schedule`. Every other parametrisation (noise, score, velocity)
follows from it through :mod:`priors.tweedie`.
"""

from __future__ import annotations

import abc
import functools
import inspect

from typing import Any, ClassVar

from torch import Tensor, nn

import checks

from checks import all_finite
from priors.cost import record
from priors.schedules import Schedule, as_time

__all__ = ["Denoiser", "Wrapper"]


class Denoiser(nn.Module, abc.ABC):
    r"""Abstract denoiser :math:`(x_t, t) \mapsto E[x \mid x_t]`.

    Calls are checked before :meth:`forward` runs: ``x_t`` must be a finite real floating
    tensor (the package's dtype policy, :mod:`checks`) with a batch dimension and ``t`` a time
    in [0, 1] of shape :math:`()` or :math:`(B,)`; ``t`` reaches :meth:`forward` as a float64
    tensor on ``x_t``'s device. A leaf denoiser's output is checked after it: NaN or Inf from
    a finite input raises a ``FloatingPointError`` that names the denoiser and the input's
    magnitude (a diverged guidance step upstream shows as a huge input).

    Leaf denoisers (networks, analytic priors) count one network evaluation per row
    (:mod:`priors.cost`); denoisers that call another one derive from :class:`Wrapper`.

    Arguments:
        schedule: The noise schedule the denoiser was trained for.
    """

    counts_evaluations: ClassVar[bool] = True

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a priors.Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.register_forward_pre_hook(_check_call, with_kwargs=True)
        if self.counts_evaluations:
            self.register_forward_hook(_check_output, with_kwargs=True)

    def mirror(self, inner: Denoiser) -> None:
        """For wrappers: copies what describes the wrapped denoiser's samples (``shape``,
        ``num_classes``, ``conditions``, where it has them) onto this one."""
        for name in ("shape", "num_classes", "conditions"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    @abc.abstractmethod
    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        r"""
        Arguments:
            x_t: The noisy input, with shape :math:`(B, *)`.
            t: The time, with shape :math:`()` or :math:`(B,)`.
            cond: Conditioning keywords (e.g. ``label``) for conditional denoisers.

        Returns:
            The posterior mean :math:`E[x \mid x_t]`, with shape :math:`(B, *)`.
        """


class Wrapper(Denoiser):
    r"""A denoiser built on another one, ``prior`` (guidance, classifier-free guidance,
    acceleration): it shares the prior's schedule and what describes its samples
    (``shape``, ``num_classes``, ``conditions``), and its calls are not counted as network
    evaluations, since the prior's calls are. Subclasses implement :meth:`forward` in
    terms of ``self.prior``.

    Arguments:
        prior: The wrapped denoiser.
    """

    counts_evaluations: ClassVar[bool] = False

    def __init__(self, prior: Denoiser) -> None:
        if not isinstance(prior, Denoiser):
            raise TypeError(f"prior must be a priors.Denoiser, got {type(prior).__name__}")
        super().__init__(prior.schedule)
        self.prior = prior
        self.mirror(prior)


def _check_call(
    module: Denoiser, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args, kwargs = list(args), dict(kwargs)
    names = ("x_t", "t")
    values = []
    for i, name in enumerate(names):
        if i < len(args):
            values.append(args[i])
        elif name in kwargs:
            values.append(kwargs.pop(name))
        else:
            raise TypeError(f"{type(module).__name__} needs the argument {name!r}")
    x_t, t = values
    checks.real_tensor(x_t, "x_t")
    if x_t.ndim < 1:
        raise ValueError("x_t must be a tensor with a batch dimension, shape (B, *)")
    checks.finite(x_t, "x_t")
    t = as_time(t.detach() if isinstance(t, Tensor) else t).to(x_t.device)
    if t.ndim == 1 and t.shape[0] != x_t.shape[0]:
        raise ValueError(
            f"t has shape {tuple(t.shape)} but x_t has batch {x_t.shape[0]}: "
            "t must be a scalar or have one entry per row"
        )
    accepted = _keywords(type(module))
    unknown = [] if accepted is None else [k for k in kwargs if k not in accepted]
    if unknown:
        raise TypeError(
            f"{type(module).__name__} takes no condition {unknown}; it takes "
            f"{sorted(accepted) or 'none'}"
        )
    if x_t.shape[0] == 0:
        raise ValueError("x_t is an empty batch (B = 0)")
    if module.counts_evaluations:
        record(nfe_rows=x_t.shape[0])
    return (x_t, t, *args[2:]), kwargs


def _check_output(
    module: Denoiser, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
) -> None:
    if isinstance(out, Tensor) and not all_finite(out):
        x_t, t = args[0], args[1]
        raise FloatingPointError(
            f"{type(module).__name__} returned NaN or Inf for a finite input at t = "
            f"{float(t.flatten()[0]):.4g} (largest |x_t| = {float(x_t.abs().max()):.3g}; a huge "
            "input means that an earlier step, e.g. a guidance term, diverged)"
        )


@functools.cache
def _keywords(cls: type) -> frozenset[str] | None:
    """The keywords ``cls.forward`` takes besides ``x_t`` and ``t`` (None: any)."""
    parameters = inspect.signature(cls.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters if p.name not in ("self", "x_t", "t"))
