"""Wall-clock timing and peak memory of a call, the one way every app and benchmark here
measures them."""

from __future__ import annotations

import ctypes
import gc
import statistics
import time

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

__all__ = ["peak_memory", "timed", "timed_pair"]

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


def timed_pair(
    first: Callable[[], object],
    second: Callable[[], object],
    repeats: int,
    *,
    warm_up: bool = True,
) -> tuple[float, float]:
    """Median wall times of two calls timed in alternation (after one warm-up call each,
    unless ``warm_up`` is False because the caller has just run both), so that drift of the
    machine (frequency, other load) falls on both alike."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warm_up:
        first(), second()
    walls: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for run, wall in zip((first, second), walls, strict=True):
            start = time.perf_counter()
            run()
            wall.append(time.perf_counter() - start)
    return statistics.median(walls[0]), statistics.median(walls[1])


def _status(key: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (``None`` where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return 1024 * int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory(
    run: Callable[[], T], device: torch.device | None = None
) -> tuple[T, float | None]:
    """Calls ``run`` once; returns its result and the peak memory it added, in MiB: on a
        CUDA ``device`` the peak of ``torch.cuda.max_memory_allocated`` above the allocation
        before the call; on the CPU (Linux) the peak resident set size above the resident size
        before the call (freed heap returned by glibc's ``malloc_trim`` and the peak reset through
    ``/proc/self/clear_refs`` first). ``None``
        where the platform cannot tell."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = run()
        torch.cuda.synchronize(device)
        return out, (torch.cuda.max_memory_allocated(device) - before) / 2**20
    gc.collect()
    try:  # glibc keeps freed blocks resident; hand them back so reuse shows as growth
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to now
    except OSError:
        return run(), None
    before = _status("VmRSS")
    out = run()
    peak = _status("VmHWM")
    if before is None or peak is None:
        return out, None
    return out, max(peak - before, 0) / 2**20
