"""Wall-clock timing of a call, the one way every app and benchmark here measures it."""

from __future__ import annotations

import statistics
import time

from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["timed"]

T = TypeVar("T")


def timed(
    run: Callable[[], T], repeats: int, device: torch.device | None = None
) -> tuple[T, float]:
    """Calls ``run`` once untimed (warm-up: lazy initialisation, compilation), then
    ``repeats`` times; returns the last result and the median wall time in seconds. On a
    CUDA ``device`` each timed call is bracketed by synchronisations, so queued kernels count.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else None
    out = run()
    walls = []
    for _ in range(repeats):
        if sync is not None:
            sync(device)
        start = time.perf_counter()
        out = run()
        if sync is not None:
            sync(device)
        walls.append(time.perf_counter() - start)
    return out, statistics.median(walls)
