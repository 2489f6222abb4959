"""The A* planner as an operator: its paths are shortest (against breadth-first distances),
connected and end where asked; unreachable goals give empty rasters; a derivative is refused
with the error that names derivative-free guidance; calls are counted; bad input is
refused."""

from collections import deque

import numpy as np
import pytest
import torch

import guided
import operators

from operators.planner import astar


def _distance(blocked, start, goal):
    """Breadth-first distance (None when unreachable)."""
    seen, queue = {start: 0}, deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            return seen[cell]
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nxt = (cell[0] + dr, cell[1] + dc)
            inside = 0 <= nxt[0] < blocked.shape[0] and 0 <= nxt[1] < blocked.shape[1]
            if inside and not blocked[nxt] and nxt not in seen:
                seen[nxt] = seen[cell] + 1
                queue.append(nxt)
    return None


def test_astar_paths_are_shortest_connected_and_end_where_asked():
    rng = np.random.default_rng(0)
    found = 0
    for _ in range(200):
        blocked = rng.random((12, 15)) < 0.3
        start = tuple(int(v) for v in rng.integers((12, 15)))
        goal = tuple(int(v) for v in rng.integers((12, 15)))
        path = astar(blocked, start, goal)
        expected = None if blocked[start] or blocked[goal] else _distance(blocked, start, goal)
        if expected is None:
            assert path == []
            continue
        found += 1
        assert path[0] == start and path[-1] == goal and len(path) == expected + 1
        assert not any(blocked[c] for c in path)
        steps = np.abs(np.diff(np.array(path), axis=0)).sum(1)
        assert bool((steps == 1).all())
    assert found > 50  # the check saw many reachable pairs


def test_the_operator_rasterises_each_pair_and_counts_calls():
    plan = -torch.ones(2, 1, 5, 6, dtype=torch.float64)
    plan[1, 0, :, 2] = 1.0  # a wall across the second plan: the right side is unreachable
    pairs = torch.tensor([[[0, 0], [0, 4]], [[4, 0], [4, 1]]])
    op = operators.PathPlanner((1, 5, 6), pairs)
    out = op(plan)
    assert out.shape == (2, 2, 5, 6) and out.dtype == torch.float64
    assert out[0, 0, 0, :5].tolist() == [1.0] * 5 and float(out[0, 0].sum()) == 5
    assert float(out[1, 0].sum()) == 0  # blocked
    assert float(out[1, 1].sum()) == 2  # two neighbours on the free side
    assert op.calls == 4


def test_a_derivative_is_refused_naming_derivative_free_guidance():
    op = operators.PathPlanner((1, 5, 6), torch.tensor([[[0, 0], [4, 5]]]))
    x = -torch.ones(1, 1, 5, 6)
    with pytest.raises(operators.NotDifferentiableError, match="derivative-free"):
        op.vjp(x, torch.ones(1, 1, 5, 6))
    with pytest.raises(operators.NotDifferentiableError, match="derivative-free"):
        guided.DPS(op, op(x), 0.1)


@pytest.mark.parametrize(
    ("shape", "pairs", "error", "match"),
    [
        ((1, 5, 6), torch.tensor([[[0.0, 0.0], [1.0, 1.0]]]), TypeError, "integer"),
        ((1, 5, 6), torch.tensor([[0, 0], [1, 1]]), ValueError, r"\(P, 2, 2\)"),
        ((1, 5, 6), torch.tensor([[[0, 0], [5, 1]]]), ValueError, "cells of the 5 x 6"),
        ((1, 5, 6), torch.tensor([[[0, -1], [1, 1]]]), ValueError, "cells of the 5 x 6"),
        ((2, 5, 6), torch.tensor([[[0, 0], [1, 1]]]), ValueError, "one-channel"),
    ],
)
def test_bad_input_is_refused(shape, pairs, error, match):
    with pytest.raises(error, match=match):
        operators.PathPlanner(shape, pairs)
