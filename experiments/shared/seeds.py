"""Random streams of the apps: one generator per row, and a stream per method that depends
on the method's name only (so a method's scores do not change with which others run)."""

from __future__ import annotations

import zlib

import torch

__all__ = ["generators", "method_salt"]


def generators(seed: int, rows: int, salt: int) -> list[torch.Generator]:
    """One generator per row, seeded from (seed, salt, row)."""
    return [
        torch.Generator().manual_seed(seed * 1_000_003 + salt * 10_007 + r) for r in range(rows)
    ]


def method_salt(task: int, method: str) -> int:
    """A method's own stream on a task, derived from the task and the method's name (not
    from which other methods run, so a method's scores do not depend on them)."""
    return task * 101 + zlib.crc32(method.encode()) % 100_003
