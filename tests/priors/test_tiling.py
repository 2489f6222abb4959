"""Tiled: one pass on any size, and blended tiles that agree with the one pass (exactly where
every tile sees a pixel's whole neighbourhood), with per-row conditions routed to each tile
and gradients through the blend."""

import itertools

import pytest
import torch

import priors

from priors.tiling import tile_starts


class BoxFilter(priors.Denoiser):
    """A local stand-in for a network: a 3x3 mean (radius 1, zero padding) times a label
    factor, and it refuses sides that are not multiples of ``factor``."""

    factor = 4

    def __init__(self) -> None:
        super().__init__(priors.CosineSchedule())
        self.shape = (1, 16, 16)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x_t, t, label=None):
        if x_t.shape[-1] % self.factor or x_t.shape[-2] % self.factor:
            raise ValueError(f"sides must be multiples of {self.factor}")
        self.calls.append(tuple(x_t.shape))
        kernel = torch.full((1, 1, 3, 3), 1 / 9, dtype=x_t.dtype)
        out = torch.nn.functional.conv2d(x_t, kernel, padding=1) * (
            1 + t.to(x_t.dtype).view(-1, 1, 1, 1)
        )
        if label is not None:
            out = out * (1 + label.to(x_t.dtype).view(-1, 1, 1, 1))
        return out


def _image(b=2, h=70, w=93, seed=0):
    return torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(("length", "tile", "overlap"), [(70, 32, 8), (64, 32, 8), (20, 32, 8)])
def test_tiles_cover_the_axis_with_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    for a, b in itertools.pairwise(starts):
        assert 0 < b - a <= tile - overlap


def test_one_pass_pads_to_the_factor_and_crops_back():
    prior = BoxFilter()
    x = _image()
    t = torch.tensor(0.3)
    out = priors.Tiled(prior, tile=None)(x, t)
    assert out.shape == x.shape and prior.calls[-1][-2:] == (72, 96)
    padded = torch.nn.functional.pad(x, (0, 3, 0, 2), mode="reflect")
    torch.testing.assert_close(out, prior(padded, t)[..., :70, :93])


def test_tiles_agree_with_the_one_pass():
    """Away from the tiles' inner edges (radius 1 of the filter) the blend is exact; at the
    edges a pixel's weight in the tile that cuts its neighbourhood is at most 0.5 / overlap
    of the total, so the difference is bounded by that share of the filter's edge error."""
    prior, x, t = BoxFilter(), _image(), torch.tensor([0.2, 0.7])
    one = priors.Tiled(prior, tile=None)(x, t)
    tiled = priors.Tiled(prior, tile=32, overlap=8, batch=5)(x, t)
    assert max(shape[0] for shape in prior.calls[1:]) <= 5  # memory bounded by the batch
    edges = torch.zeros(70, 93, dtype=torch.bool)
    for i in tile_starts(72, 32, 8):  # the padded sides, 72 x 96
        edges[i, :] |= i > 0
        edges[i + 31 : i + 32, :] |= i + 32 < 72
    for j in tile_starts(96, 32, 8):
        edges[:, j] |= j > 0
        edges[:, j + 31 : j + 32] |= j + 32 < 96
    torch.testing.assert_close(tiled[..., ~edges], one[..., ~edges])
    gap = (tiled - one).abs()[..., edges].max()
    assert 0 < gap <= 2 * (0.5 / 8) * 2.0  # share x (twice the largest |x_hat| of the filter)


def test_conditions_follow_their_rows_into_the_tiles():
    prior, x, t = BoxFilter(), _image(b=3), torch.tensor(0.5)
    label = torch.tensor([0, 2, 1])
    tiled = priors.Tiled(prior, tile=32, overlap=8, batch=4)(x, t, label=label)
    one = priors.Tiled(prior, tile=None)(x, t, label=label)
    for row in range(3):  # the label scales its own row only
        ratio = tiled[row, 0, 35, 35] / one[row, 0, 35, 35]  # on no tile edge
        torch.testing.assert_close(ratio, torch.tensor(1.0))


def test_gradients_pass_through_the_blend():
    prior, t = BoxFilter(), torch.tensor(0.4)
    x = _image(b=1, h=17, w=21).double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: priors.Tiled(prior, 16, 4)(z, t), (x,))


class WideFilter(priors.Denoiser):
    """A local network with wide activations (32 channels), so that what a VJP keeps for
    the backward pass is dominated by activations."""

    factor = 4

    def __init__(self) -> None:
        super().__init__(priors.CosineSchedule())
        self.shape = (1, 16, 16)
        g = torch.Generator().manual_seed(0)
        self.inner = torch.nn.Parameter(torch.randn(32, 1, 3, 3, generator=g) / 3)
        self.outer = torch.nn.Parameter(torch.randn(1, 32, 3, 3, generator=g) / 20)

    def forward(self, x_t, t):
        h = torch.tanh(torch.nn.functional.conv2d(x_t, self.inner.to(x_t.dtype), padding=1))
        return x_t + torch.nn.functional.conv2d(h, self.outer.to(x_t.dtype), padding=1)


def _kept_for_backward(tiled, x, t):
    """The bytes the autograd graph keeps for the backward pass, the VJP and the cost."""
    kept = []

    def pack(tensor):
        kept.append(tensor.numel() * tensor.element_size())
        return tensor

    cost = priors.Cost()
    with priors.cost.measure(cost, x.shape[0]):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = tiled(x, t)
        (vjp,) = torch.autograd.grad(out, x, torch.ones_like(out))
    return sum(kept), vjp, cost


def test_a_vjp_through_tiles_keeps_one_batch_of_activations_at_a_time():
    """With recompute (the default) each batch of tiles is checkpointed: the graph keeps a
    small fraction of what it keeps without, the VJP is the same, and the recomputed forward
    passes are not counted as evaluations."""
    prior, t = WideFilter(), torch.tensor(0.3)
    x = _image(b=1, h=128, w=128).requires_grad_(True)
    plain = _kept_for_backward(priors.Tiled(prior, 32, 8, batch=2, recompute=False), x, t)
    saved = _kept_for_backward(priors.Tiled(prior, 32, 8, batch=2), x, t)
    assert saved[0] < plain[0] / 8, (saved[0], plain[0])
    torch.testing.assert_close(saved[1], plain[1])
    assert saved[2] == plain[2] and plain[2].nfe == 25  # 5 x 5 tiles, each counted once
    with pytest.raises(TypeError, match="recompute must be True or False"):
        priors.Tiled(prior, recompute="yes")


def test_the_factor_comes_from_the_network():
    prior = priors.load("digits")
    assert prior.factor == 4 and priors.Tiled(prior).factor == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": 30}, "tile must be a multiple of factor 4"),
        ({"tile": 32, "overlap": 16}, "overlap must be less than tile / 2"),
        ({"tile": 32, "overlap": 0}, "overlap"),
        ({"batch": 0}, "batch"),
        ({"factor": 0}, "factor"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        priors.Tiled(BoxFilter(), **kwargs)


def test_only_images_are_taken():
    with pytest.raises(ValueError, match=r"x_t must be images \(B, C, H, W\)"):
        priors.Tiled(BoxFilter())(torch.zeros(2, 16), torch.tensor(0.5))


def _astronaut_crop(side):
    """A held-out photograph (the natural prior never saw it): astronaut's BT.601 luma."""
    from skimage import data

    rgb = torch.from_numpy(data.astronaut()).double().permute(2, 0, 1) / 255
    grey = (torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(3, 1, 1) * rgb).sum(0)
    return (grey[:side, 128 : 128 + side] * 2 - 1)[None, None]


def test_no_seams_with_the_shipped_natural_prior():
    """Tiling forced on an image that fits in one pass (tiles of 96, the default overlap of
    32): the blend matches the one pass within 0.01 (of a range of 2) everywhere (measured:
    0.0082; 0.022 with an overlap of 16), and the error against the truth in a band of 4
    pixels around the inner tile borders is within 1% of the one pass's there (measured:
    +0.01%)."""
    prior = priors.load("natural")
    truth = _astronaut_crop(192)
    g = torch.Generator().manual_seed(0)
    noise = 2 * 25 / 255
    t = prior.schedule.time_of(-torch.log(torch.tensor(noise, dtype=torch.float64)))
    alpha_t = prior.schedule(t)[0]
    x_t = alpha_t * (truth + noise * torch.randn(truth.shape, generator=g, dtype=torch.float64))
    with torch.no_grad():
        one = priors.Tiled(prior, tile=None)(x_t, t)
        tiled = priors.Tiled(prior, tile=96, overlap=32)(x_t, t)
    assert float((tiled - one).abs().max()) < 0.01
    band = torch.zeros(192, 192, dtype=torch.bool)
    starts = tile_starts(192, 96, 32)
    edges = {s for s in starts if s > 0} | {s + 96 for s in starts if s + 96 < 192}
    for edge in edges:  # the inner borders, where tiles begin and end
        band[edge - 4 : edge + 4, :] = True
        band[:, edge - 4 : edge + 4] = True

    def rmse(x):
        return float((x - truth)[..., band].pow(2).mean().sqrt())

    assert rmse(tiled) <= 1.01 * rmse(one)
