"""Procedural floor plans: walls and free space in {1, -1}, an outer wall, every free cell
reachable from every other (so the planner always finds a path), reproducible and distinct
splits, bad arguments refused."""

import numpy as np
import pytest
import torch

from scipy import ndimage

from experiments.shared.floorplans import FloorPlans
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
