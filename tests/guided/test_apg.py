"""Adaptive projected guidance: classifier-free guidance at eta = 1 without momentum or
rescaling; the projection, the norm cap and the reverse momentum by their formulas, per row;
the momentum restarts with a new run; clear errors."""

import pytest
import torch

import guided
import priors


class Toy(priors.Denoiser):
    """x_hat = A_label x_t + b_label: a different linear map per class (label -1 included),
    so the update is not parallel to the conditional prediction."""

    num_classes = 3

    def __init__(self):
        super().__init__(priors.CosineSchedule())
        g = torch.Generator().manual_seed(0)
        self.maps = torch.randn(4, 5, 5, generator=g, dtype=torch.float64) / 3
        self.offsets = torch.randn(4, 5, generator=g, dtype=torch.float64)

    def forward(self, x_t, t, label=None):
        index = label + 1
        return torch.einsum("bij,bj->bi", self.maps[index], x_t) + self.offsets[index]


def _passes(toy, x_t, t, label):
    return toy(x_t, t, label=label), toy(x_t, t, label=torch.full_like(label, -1))


def _inputs(seed=1, rows=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 5, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 1])


def test_eta_one_without_momentum_or_cap_is_classifier_free_guidance():
    toy = Toy()
    x_t, label = _inputs()
    t = torch.tensor(0.4)
    for scale in (0.0, 2.5, 7.0):
        apg = guided.APG(toy, scale, eta=1.0)(x_t, t, label=label)
        cfg = guided.ClassifierFree(toy, scale)(x_t, t, label=label)
        torch.testing.assert_close(apg, cfg, rtol=1e-12, atol=1e-12)


def test_the_projection_drops_the_parallel_part_per_row():
    """eta = 0: the output minus the conditional prediction is (w - 1) times the update's part
    orthogonal to the conditional prediction, row by row; eta = 0.5 keeps half the rest."""
    toy = Toy()
    x_t, label = _inputs()
    t = torch.tensor(0.3)
    conditional, unconditional = _passes(toy, x_t, t, label)
    delta = conditional - unconditional
    along = conditional / conditional.norm(dim=1, keepdim=True)
    parallel = (delta * along).sum(1, keepdim=True) * along
    for eta in (0.0, 0.5):
        out = guided.APG(toy, 4.0, eta=eta)(x_t, t, label=label)
        torch.testing.assert_close(out, conditional + 3.0 * (delta - parallel + eta * parallel))
    out = guided.APG(toy, 4.0)(x_t, t, label=label)
    assert float(((out - conditional) * conditional).sum(1).abs().max()) < 1e-10
    assert float((delta * conditional).sum(1).abs().min()) > 1e-2  # CFG's update is not


def test_the_norm_cap_limits_each_rows_update():
    toy = Toy()
    x_t, label = _inputs()
    t = torch.tensor(0.3)
    conditional, unconditional = _passes(toy, x_t, t, label)
    norms = (conditional - unconditional).norm(dim=1)
    cap = float(norms.median())
    out = guided.APG(toy, 3.0, eta=1.0, norm_threshold=cap)(x_t, t, label=label)
    update = (out - conditional) / 2.0
    torch.testing.assert_close(update.norm(dim=1), norms.clamp(max=cap))
    capped = norms > cap
    assert bool(capped.any()) and bool((~capped).any())


class Shaped(priors.Denoiser):
    """The toy on rows shaped (5, 1, 1), as images are: APG must treat a row as one vector
    whatever its number of dimensions."""

    num_classes = 3

    def __init__(self):
        super().__init__(priors.CosineSchedule())
        self.toy = Toy()

    def forward(self, x_t, t, label=None):
        return self.toy(x_t.flatten(1), t, label=label).view(x_t.shape)


def test_image_shaped_rows_are_capped_and_projected_as_flat_rows():
    x_t, label = _inputs()
    t = torch.tensor(0.3)
    for options in (
        {"norm_threshold": 0.5},
        {"eta": 0.5, "norm_threshold": 2.0, "momentum": -0.5},
    ):
        flat = guided.APG(Toy(), 6.0, **options)(x_t, t, label=label)
        shaped = guided.APG(Shaped(), 6.0, **options)(x_t.view(4, 5, 1, 1), t, label=label)
        torch.testing.assert_close(shaped.flatten(1), flat, rtol=1e-12, atol=1e-12)


def test_the_reverse_momentum_accumulates_along_a_run_and_restarts():
    """avg_k = delta_k + beta avg_{k-1} while time decreases; a later time starts over."""
    toy = Toy()
    x_t, label = _inputs()
    apg = guided.APG(toy, 2.0, eta=1.0, momentum=-0.5)
    average = torch.zeros_like(x_t)
    for step, t in enumerate([0.9, 0.6, 0.3]):
        t = torch.tensor(t)
        x_step = x_t * (1 + step)
        conditional, unconditional = _passes(toy, x_step, t, label)
        average = (conditional - unconditional) + (-0.5) * average
        out = apg(x_step, t, label=label)
        torch.testing.assert_close(out, conditional + average)
    t = torch.tensor(0.9)  # a new run
    conditional, unconditional = _passes(toy, x_t, t, label)
    torch.testing.assert_close(apg(x_t, t, label=label), conditional + conditional - unconditional)


def test_rows_are_independent_and_two_passes_are_counted():
    toy = Toy()
    x_t, label = _inputs()
    t = torch.tensor(0.5)
    apg = guided.APG(toy, 5.0, norm_threshold=1.0)
    cost = priors.Cost()
    with priors.measure(cost, batch=4):
        out = apg(x_t, t, label=label)
    assert cost.nfe == 2
    torch.testing.assert_close(out[2:3], apg(x_t[2:3], t, label=label[2:3]))


def test_errors():
    toy = Toy()
    for name, bad in [
        ("eta", float("nan")),
        ("eta", float("inf")),
        ("norm_threshold", -1.0),
        ("momentum", 1.0),
        ("momentum", -1.5),
    ]:
        with pytest.raises(ValueError, match=name):
            guided.APG(toy, 3.0, **{name: bad})
    with pytest.raises(ValueError, match="missing"):
        guided.APG(toy, 3.0)(torch.zeros(1, 5, dtype=torch.float64), torch.tensor(0.5))
