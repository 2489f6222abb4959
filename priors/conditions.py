r"""Conditions held fixed through a sampling run, and what depends on them alone, computed
once.

A sampler passes the same condition tensors (a policy's states, a class label) to its
denoiser at every step, so whatever a network computes from the conditions alone (the
state embedding :math:`e_k(c_k)` of :class:`priors.MLP`) is the same at every step. Inside
:func:`fixed_conditions` (every :class:`guided.Sampler` run opens one), :func:`remember`
computes such a value at its first call and returns the stored value afterwards, as long as

- the source is the same tensor object and neither it nor the parameters were modified in
  place since (their version counters), with the same extra key (batch, dtype, device), and
- no gradient has to flow through it: when autograd records (gradients enabled and the
  source or one of the parameters needs a gradient) it computes every time, so training
  through a sampler and differentiating with respect to the conditions are unaffected.

Outside the block nothing is remembered, so a tensor that shares memory with a NumPy buffer
refilled between calls (which no version counter sees) is never served stale. One value is
kept per key: a new source replaces the old one, so a wrapper that builds new condition
tensors at every step (classifier-free guidance's doubled batch) costs no memory.

Kept because it saves at least 10% on a policy's sampling latency: without it, 256 actions
by behaviour cloning with 10 DDPM steps on one thread took 1.12x as long with the bandit's
networks and 1.17x with Pendulum's (medians of 41 alternated pairs, ``python -m
experiments.benchmarks.latency_tricks --repeats 41`` and ``--state-dim 3 --width 128``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

from torch import Tensor

__all__ = ["fixed_conditions", "per_row", "remember"]

_RUN: ContextVar[dict[Hashable, tuple[Tensor, tuple[int, ...], Hashable, Tensor]] | None] = (
    ContextVar("fixed_conditions", default=None)
)


@contextmanager
def fixed_conditions() -> Iterator[None]:
    """Declares that, inside the block, condition tensors are not changed other than in
    place through torch (what a sampler's loop guarantees); the block's remembered values
    are dropped when it exits. Blocks nest, each with its own values."""
    token = _RUN.set({})
    try:
        yield
    finally:
        _RUN.reset(token)


def remember(
    key: Hashable,
    source: Tensor,
    compute: Callable[[], Tensor],
    parameters: Iterable[Tensor] = (),
    extra: Hashable = None,
) -> Tensor:
    """``compute()``, or the value it gave for the same ``key``, ``source`` (the same
    object, unchanged) and ``extra`` earlier in the enclosing :func:`fixed_conditions`
    block (see the module)."""
    run = _RUN.get()
    if run is None or source.is_inference():  # inference tensors keep no version counter
        return compute()
    parameters = tuple(parameters)
    if torch.is_grad_enabled() and (
        source.requires_grad or any(p.requires_grad for p in parameters)
    ):
        return compute()
    versions = (source._version, *(p._version for p in parameters))
    entry = run.get(key)
    if entry is not None and entry[0] is source and entry[1] == versions and entry[2] == extra:
        return entry[3]
    value = compute()
    run[key] = (source, versions, extra, value)
    return value


def per_row(cond: Mapping[str, Any], b: int, rows: Callable[[Tensor], Tensor]) -> dict[str, Any]:
    """The conditions of a batch made from the ``b`` rows of ``x_t`` (repeated, selected or
    split by a wrapper): ``rows`` applied to every tensor with one row per row of ``x_t``
    (a per-row condition, such as a label or a policy's state); anything else (a number, a
    tensor shared by all rows) unchanged."""
    return {
        k: rows(v) if isinstance(v, Tensor) and v.ndim and v.shape[0] == b else v
        for k, v in cond.items()
    }
