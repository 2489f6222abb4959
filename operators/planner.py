r"""A path planner as a forward operator: floor plan in, planned trajectories out.

:class:`PathPlanner` reads an occupancy grid :math:`x` :math:`(1, H, W)` (a cell is a wall
where :math:`x > ` ``threshold``, free otherwise) and, for each of :math:`P` fixed
start–goal pairs, plans a shortest 4-connected path over the free cells by A* (Hart,
Nilsson & Raphael, 1968) with the Manhattan distance as its heuristic (admissible and
consistent on a 4-connected grid of unit steps, so the path is a shortest one). The
measurement is each path rasterised, :math:`(P, H, W)`: 1 on the path's cells (start and
goal included), 0 elsewhere; a pair whose start or goal is a wall, or whose goal cannot be
reached, gives an empty raster.

Ties between shortest paths are broken deterministically (the open set orders by
:math:`f = g + h`, then by :math:`h`, then by insertion), so the operator is a function of
the plan. Thresholding and path search have no useful derivative: the operator declares
``differentiable = False``, and a guidance rule that asks for its vector-Jacobian product is
refused with an error naming the derivative-free rules (:class:`guided.EnKG`,
:class:`guided.ZerothOrder`, :class:`guided.SurrogateLikelihood`). :attr:`PathPlanner.calls`
counts the A* searches run, the cost a derivative-free method is measured by.

References:
    | A Formal Basis for the Heuristic Determination of Minimum Cost Paths (Hart, Nilsson &
    | Raphael, IEEE Trans. Systems Science and Cybernetics, 1968)
    | https://doi.org/10.1109/TSSC.1968.300136
"""

from __future__ import annotations

import heapq

from typing import ClassVar

import numpy as np
import torch

from torch import Tensor

import checks

from operators.base import Operator, check_image_shape

__all__ = ["PathPlanner", "astar"]

_MOVES = ((1, 0), (-1, 0), (0, 1), (0, -1))
Cell = tuple[int, int]


def astar(blocked: np.ndarray, start: Cell, goal: Cell) -> list[Cell]:
    """A shortest 4-connected path from ``start`` to ``goal`` over the cells where
    ``blocked`` (H, W) is False, both ends included; empty when there is none."""
    height, width = blocked.shape
    if blocked[start] or blocked[goal]:
        return []

    def h(cell: Cell) -> int:
        return abs(cell[0] - goal[0]) + abs(cell[1] - goal[1])

    cost = {start: 0}
    parent: dict[Cell, Cell] = {}
    counter = 0
    frontier = [(h(start), h(start), counter, start)]
    closed = set()
    while frontier:
        _, _, _, cell = heapq.heappop(frontier)
        if cell == goal:
            path = [cell]
            while path[-1] != start:
                path.append(parent[path[-1]])
            return path[::-1]
        if cell in closed:
            continue
        closed.add(cell)
        for dr, dc in _MOVES:
            nxt = (cell[0] + dr, cell[1] + dc)
            if not (0 <= nxt[0] < height and 0 <= nxt[1] < width) or blocked[nxt]:
                continue
            g = cost[cell] + 1
            if g < cost.get(nxt, g + 1):
                cost[nxt], parent[nxt] = g, cell
                counter += 1
                heapq.heappush(frontier, (g + h(nxt), h(nxt), counter, nxt))
    return []


class PathPlanner(Operator):
    r"""Plans (1, H, W) to rasterised A* paths (P, H, W) for fixed start-goal pairs (see the
    module).

    Arguments:
        shape: The plans' shape :math:`(1, H, W)`.
        pairs: :math:`(P, 2, 2)` integer cells, ``pairs[p] = ((r_s, c_s), (r_g, c_g))``.
        threshold: A cell is a wall where the plan exceeds it (plans in [-1, 1]: walls 1,
            free -1).

    Attributes:
        calls: The number of A* searches run so far (rows times pairs).
    """

    differentiable: ClassVar[bool] = False

    def __init__(self, shape: tuple[int, ...], pairs: Tensor, threshold: float = 0.0) -> None:
        channels, height, width = check_image_shape(shape)
        if channels != 1:
            raise ValueError(f"shape must be a one-channel plan (1, H, W), got {tuple(shape)}")
        if not isinstance(pairs, Tensor) or pairs.is_floating_point() or pairs.is_complex():
            raise TypeError(
                f"pairs must be an integer tensor of cells (P, 2, 2), got "
                f"{type(pairs).__name__ if not isinstance(pairs, Tensor) else pairs.dtype}"
            )
        if pairs.ndim != 3 or pairs.shape[1:] != (2, 2) or pairs.shape[0] < 1:
            raise ValueError(
                f"pairs must have shape (P, 2, 2) with P >= 1, got {tuple(pairs.shape)}"
            )
        rows, cols = pairs[..., 0], pairs[..., 1]
        if bool(
            (rows < 0).any() | (rows >= height).any() | (cols < 0).any() | (cols >= width).any()
        ):
            raise ValueError(f"pairs must be cells of the {height} x {width} grid")
        self.pairs = pairs.detach().to(torch.long).cpu().clone()
        self.threshold = checks.number(threshold, "threshold")
        self.calls = 0
        super().__init__((1, height, width), (len(pairs), height, width))

    def apply(self, x: Tensor) -> Tensor:
        blocked = (x.detach()[:, 0] > self.threshold).cpu().numpy()
        out = np.zeros((x.shape[0], *self.out_shape), dtype=np.float32)
        for b, grid in enumerate(blocked):
            for p, (start, goal) in enumerate(self.pairs.tolist()):
                for r, c in astar(grid, tuple(start), tuple(goal)):
                    out[b, p, r, c] = 1.0
        self.calls += x.shape[0] * len(self.pairs)
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)
