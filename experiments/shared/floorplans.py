r"""Procedural floor plans: occupancy grids of rooms, walls and doors, for the floor-plan
prior and the planner inference app.

A plan is :math:`(1, S, S)` in :math:`\{-1, 1\}`: walls 1, free space -1 (the priors' data
range). Each plan, from its own generator:

- an outer wall one cell thick around the grid;
- the interior divided recursively (binary space partition): a region at least
  ``2 * room + 1`` cells along an axis may be cut by a wall across it (along its longer
  side; ``room`` cells at least on either side, so rooms are at least ``room`` cells wide),
  which it is with probability 1 for the first ``2`` levels and ``split`` after;
- every dividing wall gets one door, a gap of ``door`` cells at a random place along it.

Later walls lie inside the parts a wall separates, so they never cross a door; a wall one
cell thick that meets a door from the side blocks at most one of its cells, and the free
cells of a door of two or more cells are joined along it. So every free cell is reachable
from every other (tested), and a path planner between any two free cells succeeds. The training and
held-out splits draw from different seed streams (``[seed, 0]`` and ``[seed, 1]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from torch import Tensor

import checks

__all__ = [
    "FloorPlans",
    "draw_pairs",
    "path_agreement",
    "paths_image",
    "trajectory_features",
    "wall_iou",
]

SPLITS = ("train", "test")


@dataclass
class _Region:
    top: int
    left: int
    bottom: int  # exclusive
    right: int


class FloorPlans:
    r"""Floor plans of one split (see the module).

    Arguments:
        split: ``train`` or ``test``.
        size: :math:`S`, the grid's side.
        room: The narrowest room, in cells.
        door: A door's width, in cells.
        split_probability: The probability that a region that can be cut is cut, after the
            first two levels.
        evaluation_size: How many plans :meth:`evaluation` draws.
    """

    num_classes = 0

    def __init__(
        self,
        split: str = "train",
        size: int = 32,
        room: int = 5,
        door: int = 2,
        split_probability: float = 0.7,
        evaluation_size: int = 256,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.size = checks.integer(size, "size", low=8)
        self.room = checks.integer(room, "room", low=2, high=(self.size - 3) // 2)
        self.door = checks.integer(door, "door", low=2, high=self.room)
        self.split_probability = checks.number(split_probability, "split_probability", low=0,
                                               high=1)  # fmt: skip
        self.evaluation_size = checks.integer(evaluation_size, "evaluation_size", low=1)
        self.shape = (1, self.size, self.size)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One plan :math:`(S, S)` of booleans (True: wall)."""
        s = self.size
        walls = np.zeros((s, s), dtype=bool)
        walls[0, :] = walls[-1, :] = walls[:, 0] = walls[:, -1] = True
        doors: list[tuple[int, int]] = []
        self._divide(walls, _Region(1, 1, s - 1, s - 1), rng, 0, doors)
        for r, c in doors:
            walls[r, c] = False
        return walls

    def _divide(
        self,
        walls: np.ndarray,
        region: _Region,
        rng: np.random.Generator,
        depth: int,
        doors: list[tuple[int, int]],
    ) -> None:
        height, width = region.bottom - region.top, region.right - region.left
        need = 2 * self.room + 1
        axes = [a for a, n in (("rows", height), ("cols", width)) if n >= need]
        if not axes or (depth >= 2 and rng.random() > self.split_probability):
            return
        axis = axes[0] if len(axes) == 1 else ("rows" if height >= width else "cols")
        if axis == "rows":  # a horizontal wall at row r
            r = int(rng.integers(region.top + self.room, region.bottom - self.room))
            walls[r, region.left : region.right] = True
            start = int(rng.integers(region.left, region.right - self.door + 1))
            doors += [(r, c) for c in range(start, start + self.door)]
            parts = [
                _Region(region.top, region.left, r, region.right),
                _Region(r + 1, region.left, region.bottom, region.right),
            ]
        else:  # a vertical wall at column c
            c = int(rng.integers(region.left + self.room, region.right - self.room))
            walls[region.top : region.bottom, c] = True
            start = int(rng.integers(region.top, region.bottom - self.door + 1))
            doors += [(r, c) for r in range(start, start + self.door)]
            parts = [
                _Region(region.top, region.left, region.bottom, c),
                _Region(region.top, c + 1, region.bottom, region.right),
            ]
        for part in parts:  # the parts exclude this wall, so their walls never cross a door
            self._divide(walls, part, rng, depth + 1, doors)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` plans :math:`(n, 1, S, S)` (float32, walls 1, free -1) and zero labels."""
        n = checks.integer(n, "n", low=1)
        seeds = torch.randint(2**62, (n,), generator=generator).tolist()
        stream = SPLITS.index(self.split)
        plans = np.stack([self.draw(np.random.default_rng([seed, stream])) for seed in seeds])
        x = torch.from_numpy(plans[:, None]).float() * 2 - 1
        return x, torch.zeros(n, dtype=torch.long)

    def evaluation(self) -> tuple[Tensor, Tensor]:
        """A fixed set of ``evaluation_size`` plans of the split (seed 0)."""
        return self.sample(self.evaluation_size, torch.Generator().manual_seed(0))

    def fit_set(self, generator: torch.Generator, n: int = 2000) -> Tensor:
        """The plans baselines are fitted on: ``n`` random draws."""
        return self.sample(n, generator)[0]


def draw_pairs(
    plan: Tensor, count: int, generator: torch.Generator, min_distance: int = 12
) -> Tensor:
    r"""``count`` start-goal pairs :math:`(P, 2, 2)` (long) on the free cells of ``plan``
    :math:`(1, S, S)` (walls > 0), each pair at least ``min_distance`` apart in Manhattan
    distance (drawn uniformly among the free cells, redrawn until it is); the pairs of one
    plan are distinct."""
    count = checks.integer(count, "count", low=1)
    min_distance = checks.integer(min_distance, "min_distance", low=1)
    if plan.ndim != 3 or plan.shape[0] != 1:
        raise ValueError(f"plan must be one plan (1, S, S), got {tuple(plan.shape)}")
    free = torch.nonzero(plan[0] <= 0)
    if len(free) < 2:
        raise ValueError("plan has fewer than two free cells")
    pairs: list[tuple[int, int, int, int]] = []
    for _ in range(1000 * count):
        i, j = torch.randint(len(free), (2,), generator=generator).tolist()
        start, goal = free[i].tolist(), free[j].tolist()
        key = (*start, *goal)
        if sum(abs(a - b) for a, b in zip(start, goal, strict=True)) >= min_distance and (
            key not in pairs
        ):
            pairs.append(key)
            if len(pairs) == count:
                return torch.tensor(pairs, dtype=torch.long).view(count, 2, 2)
    raise ValueError(
        f"could not draw {count} distinct pairs of free cells {min_distance} apart on this plan"
    )


def trajectory_features(y: Tensor) -> Tensor:
    r"""Rasterised paths :math:`(B, P, H, W)` (1 on a path's cells) to what the trajectory
    encoder sees, :math:`(B, 2, H, W)`, whatever the order of the paths: the cells some path
    visits, and the paths' ends (a path cell with at most one 4-neighbour on its own path:
    a shortest path never touches itself, so its inner cells have exactly two)."""
    if y.ndim != 4:
        raise ValueError(f"y must be paths (B, P, H, W), got {tuple(y.shape)}")
    on = (y > 0.5).to(y.dtype)
    padded = torch.nn.functional.pad(on, (1, 1, 1, 1))
    neighbours = (
        padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2]
        + padded[..., 1:-1, 2:]
    )  # fmt: skip
    ends = on * (neighbours <= 1).to(y.dtype)
    return torch.stack([on.amax(1), ends.amax(1)], 1) * 2 - 1


def wall_iou(x: Tensor, truth: Tensor, threshold: float = 0.0) -> Tensor:
    """Intersection over union of the wall cells (above ``threshold``) of ``x`` and
    ``truth`` :math:`(B, 1, S, S)`, per row."""
    a, b = (x > threshold).flatten(1), (truth > threshold).flatten(1)
    union = (a | b).sum(1).clamp_min(1)
    return (a & b).sum(1) / union


def path_agreement(replanned: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
    """How well paths re-planned on an inferred plan :math:`(B, P, H, W)` agree with the
    observed ones: the mean over paths of the intersection over union of their cells, and
    the share of paths reproduced exactly, per row. A pair the inferred plan cannot connect
    (an empty raster) scores 0."""
    a, b = replanned > 0.5, observed > 0.5
    union = (a | b).flatten(2).sum(2).clamp_min(1)
    iou = (a & b).flatten(2).sum(2) / union
    exact = (a == b).flatten(2).all(2) & a.flatten(2).any(2)
    return iou.mean(1), exact.float().mean(1)


def paths_image(plan: Tensor, paths: Tensor) -> np.ndarray:
    """An RGB image :math:`(S, S, 3)` of a plan :math:`(1, S, S)` in grey (walls dark) with
    the paths :math:`(P, S, S)` over it, one colour per path (a later path covers an earlier
    one where they share cells)."""
    from matplotlib import colormaps

    image = np.stack([np.where(plan[0].numpy() > 0, 0.15, 0.95)] * 3, -1)
    for p, path in enumerate(paths):
        image[path.numpy() > 0.5] = colormaps["tab10"](p % 10)[:3]
    return image
