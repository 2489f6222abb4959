"""Procedural floor plans: walls and free space in {1, -1}, an outer wall, every free cell
reachable from every other (so the planner always finds a path), reproducible and distinct
splits, bad arguments refused."""

import numpy as np
import pytest
import torch

from scipy import ndimage

from experiments.shared.floorplans import (
    FloorPlans,
    draw_pairs,
    path_agreement,
    trajectory_features,
    wall_iou,
)
from operators import PathPlanner
from operators.planner import astar


def test_plans_are_closed_connected_and_reproducible():
    plans = FloorPlans("train", size=32)
    x, labels = plans.sample(300, torch.Generator().manual_seed(0))
    assert x.shape == (300, 1, 32, 32) and labels.shape == (300,)
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    walls = (x[:, 0] > 0).numpy()
    assert (
        walls[:, 0].all() and walls[:, -1].all() and walls[:, :, 0].all() and walls[:, :, -1].all()
    )
    assert all(ndimage.label(~w)[1] == 1 for w in walls)  # one free region per plan
    assert 0.1 < walls.mean() < 0.4  # rooms and walls, not empty and not solid
    assert walls.reshape(300, -1).sum(1).std() > 0  # plans differ
    again, _ = plans.sample(300, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, again)
    other, _ = FloorPlans("test", size=32).sample(300, torch.Generator().manual_seed(0))
    assert not any(torch.equal(a, b) for a, b in zip(x, other, strict=True))


def test_the_planner_crosses_every_plan():
    plans = FloorPlans("test", size=24, room=4)
    rng = np.random.default_rng(1)
    for _ in range(50):
        walls = plans.draw(rng)
        free = np.argwhere(~walls)
        a, b = free[0], free[-1]
        assert astar(walls, tuple(a), tuple(b))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "nope"}, "split"),
        ({"size": 4}, "size"),
        ({"room": 20}, "room"),
        ({"door": 1}, "door"),
        ({"split_probability": 1.5}, "split_probability"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FloorPlans(**kwargs)


def test_pairs_are_distinct_free_and_far_apart():
    plans, _ = FloorPlans("test", size=32).sample(20, torch.Generator().manual_seed(1))
    for plan in plans:
        pairs = draw_pairs(plan, 6, torch.Generator().manual_seed(2), min_distance=15)
        assert pairs.shape == (6, 2, 2) and pairs.dtype == torch.long
        assert (plan[0][pairs[..., 0], pairs[..., 1]] < 0).all()  # free cells
        assert ((pairs[:, 0] - pairs[:, 1]).abs().sum(1) >= 15).all()
        assert len({tuple(p.flatten().tolist()) for p in pairs}) == 6
    again = draw_pairs(plans[0], 6, torch.Generator().manual_seed(2), min_distance=15)
    torch.testing.assert_close(
        again, draw_pairs(plans[0], 6, torch.Generator().manual_seed(2), 15)
    )
    with pytest.raises(ValueError, match="could not draw"):
        draw_pairs(plans[0], 2, torch.Generator().manual_seed(0), min_distance=60)
    with pytest.raises(ValueError, match="one plan"):
        draw_pairs(plans, 2, torch.Generator().manual_seed(0))


def test_trajectory_features_mark_visited_cells_and_ends_in_any_order():
    plans, _ = FloorPlans("test", size=32).sample(8, torch.Generator().manual_seed(3))
    for plan in plans:
        pairs = draw_pairs(plan, 4, torch.Generator().manual_seed(4))
        paths = PathPlanner(plan.shape, pairs)(plan[None])
        features = trajectory_features(paths)
        assert features.shape == (1, 2, 32, 32) and set(features.unique().tolist()) <= {-1, 1}
        torch.testing.assert_close(features[0, 0] > 0, paths[0].amax(0) > 0)
        ends = torch.zeros(32, 32, dtype=torch.bool)  # the pairs' cells, exactly
        ends[pairs[..., 0].flatten(), pairs[..., 1].flatten()] = True
        on_other = paths[0].sum(0) > 1  # an end another path runs through reads as inner
        torch.testing.assert_close((features[0, 1] > 0) | (ends & on_other), ends)
        shuffled = trajectory_features(paths[:, torch.randperm(4)])
        torch.testing.assert_close(shuffled, features)


def test_scores_of_the_true_plan_and_of_a_wrong_one():
    plans, _ = FloorPlans("test", size=32).sample(2, torch.Generator().manual_seed(5))
    pairs = draw_pairs(plans[0], 4, torch.Generator().manual_seed(6))
    op = PathPlanner(plans[0].shape, pairs)
    observed = op(plans[:1]).expand(2, -1, -1, -1)
    iou, exact = path_agreement(op(plans[:1].expand(2, -1, -1, -1)), observed)
    torch.testing.assert_close(iou, torch.ones(2))
    torch.testing.assert_close(exact, torch.ones(2))
    torch.testing.assert_close(wall_iou(plans, plans), torch.ones(2))
    empty = -torch.ones(1, 1, 32, 32)  # no walls: straight-line-ish paths, never the same
    iou, exact = path_agreement(op(empty), observed[:1])
    assert 0 < float(iou) < 1 and float(exact) < 1
    a, b = (plans > 0).flatten(1)
    assert float(wall_iou(plans[:1], plans[1:])) == pytest.approx(
        float((a & b).sum() / (a | b).sum())
    )
    solid = torch.ones(1, 1, 32, 32)  # no pair can be connected: 0
    assert float(path_agreement(op(solid), observed[:1])[0]) == 0
