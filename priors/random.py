r"""Explicit randomness.

Every function that draws noise takes ``generator``: ``None`` (torch's default stream), one
:class:`torch.Generator`, or one generator per row of the batch. With one generator per
row, row :math:`i` of every draw depends on its own generator only, so a sample's
trajectory is the same whatever its batch companions are and however many there are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torch import Tensor

__all__ = ["GeneratorLike", "randn"]

GeneratorLike = torch.Generator | Sequence[torch.Generator] | None


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
    rows = [torch.randn(shape[1:], generator=g, dtype=dtype, device=device) for g in generator]
    return torch.stack(rows)
