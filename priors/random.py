r"""Explicit randomness.

Every function that draws noise takes ``generator``: ``None`` (torch's default stream), one
:class:`torch.Generator`, or one generator per row of the batch. With one generator per
row, row :math:`i` of every draw depends on its own generator only, so a sample's
trajectory is the same whatever its batch companions are and however many there are.

A sampler run makes its ``generator`` the run's stream (:func:`run_generator`), so a part that
the sampler calls without a ``generator`` argument (a guidance term that draws probe
directions inside a denoiser call) draws from the sampler's generator(s), one stream per row,
and never from a stream of its own or the global one when the caller gave generators.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from torch import Tensor

__all__ = ["GeneratorLike", "randn", "randn_blocks", "run_generator", "sampling_generator"]

#: What `generator=` accepts: one generator for the batch, one per row, or None (the global
#: stream).
GeneratorLike = torch.Generator | Sequence[torch.Generator] | None

_RUN: ContextVar[GeneratorLike] = ContextVar("run_generator", default=None)


@contextmanager
def sampling_generator(generator: GeneratorLike) -> Iterator[None]:
    """Makes ``generator`` the stream of the run inside the block (see the module); blocks
    nest, the innermost wins."""
    token = _RUN.set(generator)
    try:
        yield
    finally:
        _RUN.reset(token)


def run_generator() -> GeneratorLike:
    """The generator(s) of the innermost sampler run (None outside a run or when the run
    draws from torch's default stream)."""
    return _RUN.get()


def randn(
    shape: Sequence[int],
    generator: GeneratorLike = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Standard normal noise of shape ``shape`` (batch first) drawn from ``generator``."""
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if not shape or len(generator) != shape[0]:
        raise ValueError(
            f"one generator per row needs {shape[0] if shape else 0} generators, "
            f"got {len(generator)}"
        )
    return randn_blocks(shape, generator, dtype=dtype, device=device)  # blocks of one row


def randn_blocks(
    shape: Sequence[int],
    generator: GeneratorLike = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Standard normal noise whose first dimension holds, for a list of :math:`G`
    generators, :math:`G` contiguous equal blocks of rows, block :math:`b` from
    ``generator[b]`` (a particle system's rows, or one row each); otherwise as
    :func:`randn`."""
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        return randn(shape, generator, dtype=dtype, device=device)
    if not shape or not generator or shape[0] % len(generator):
        raise ValueError(
            f"{len(generator)} generators cannot split {shape[0] if shape else 0} rows into "
            "equal blocks: give one generator per row of x_T"
        )
    per = (shape[0] // len(generator), *shape[1:])
    return torch.cat([randn(per, g, dtype=dtype, device=device) for g in generator])
