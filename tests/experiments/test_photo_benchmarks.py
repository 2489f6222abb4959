"""The photograph benchmarks' inputs: held-out crops only, of the stated sizes, and the
tile-border band the seam check measures."""

import pytest

from experiments.benchmarks import colour, large_image
from priors.tiling import tile_starts


def test_colour_crops_come_from_the_held_out_photographs():
    x = colour.colour_crops(2)
    assert x.shape == (6, 3, 128, 128) and x.min() >= -1 and x.max() <= 1
    assert float((x[:, 0] - x[:, 2]).abs().mean()) > 0.01  # colour, not grey


def test_the_large_image_is_the_astronaut_at_512():
    assert large_image.truth().shape == (1, 1, 512, 512)
    band = large_image.band(256)
    starts = tile_starts(512, 256, large_image.OVERLAP)
    assert band[starts[1], 0] and not band[0, 0] and float(band.double().mean()) < 0.2


def test_unknown_tasks_are_refused():
    with pytest.raises(ValueError, match="task must be sr4 or random50"):
        colour.operator("blur", (3, 128, 128))
    with pytest.raises(ValueError, match="task must be sr4 or random50"):
        large_image.operator("blur")
    with pytest.raises(ValueError, match=r"method must be one of \('ddrm', 'pigdm'\), got 'dps'"):
        large_image.restore_once("sr4", "dps", None, 16, 2, 1)


def test_the_benchmarks_build_the_task_catalogues_operators():
    import torch

    from experiments.shared import tasks

    op = large_image.operator("random50")
    assert torch.equal(op.mask, tasks.random_inpainting((1, 512, 512), keep=0.5, seed=0).mask)
    assert colour.operator("sr4", (3, 128, 128)).out_shape == (3, 32, 32)
    with pytest.raises(ValueError, match="task must be one of .*'sr4'.*got 'warp'"):
        tasks.from_catalogue("warp", (1, 16, 16))
