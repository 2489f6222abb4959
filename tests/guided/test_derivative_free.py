"""Derivative-free guidance: the zeroth-order estimate is the smoothed gradient, EnKG
fits black-box measurements, the straight-through twin, costs, warnings and errors."""

import numpy as np
import pytest
import torch

import guided
import operators
import priors

F64 = torch.float64


def _gaussian_prior(d=4):
    return priors.GaussianMixture(
        torch.ones(1, dtype=F64),
        torch.zeros(1, d, dtype=F64),
        torch.eye(d, dtype=F64)[None],
        priors.LinearSchedule(),
    )


def _projection_box(d=4):
    """A black-box linear projection (2 of d coordinates mixed), as numpy."""
    a = np.array([[0.6, 0.8, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])[:, :d]
    return operators.BlackBox(lambda x: x @ a.T, (d,), (2,)), torch.from_numpy(a)


def test_zeroth_order_vector_is_the_gradient_along_the_queries():
    """For a quadratic loss, central differences are exact along each direction, so the
    estimate is (1/q) sum u u^T grad, and -1/2 grad = A^T (y - A x) on average."""
    box, a = _projection_box()
    y = torch.tensor([[0.5, -1.0]], dtype=F64)
    x = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    term = guided.ZerothOrder(box, y, 0.1, zeta=None, queries=5)
    with priors.sampling_generator(torch.Generator().manual_seed(7)):  # as a sampler run does
        v = term.vector(x, torch.tensor(0.5), x, priors.LinearSchedule())
    u = torch.randn(3, 5, 4, dtype=F64, generator=torch.Generator().manual_seed(7))
    u = u.transpose(0, 1)  # each row's q directions drawn together
    true = (y - x @ a.T) @ a  # A^T (y - A x), rows
    expected = torch.einsum("qbi,qbj,bj->bi", u, u, true) / 5 / 0.1**2
    torch.testing.assert_close(v, expected)
    many = guided.ZerothOrder(box, y, 0.1, zeta=None, queries=20000)
    average = many.vector(x, torch.tensor(0.5), x, priors.LinearSchedule()) * 0.1**2
    assert float((average - true).norm() / true.norm()) < 0.05


def test_zeroth_order_guidance_fits_a_black_box_measurement():
    prior, (box, _) = _gaussian_prior(), _projection_box()
    y = torch.tensor([[1.0, 2.0]], dtype=F64)
    x_T = guided.initial_noise(
        prior.schedule, (64, 4), torch.Generator().manual_seed(1), dtype=F64
    )
    ts = guided.time_grid(40)
    free = guided.DDIM()(prior, x_T, ts)
    cost, g = priors.Cost(), torch.Generator().manual_seed(3)
    sampler = guided.DPSSampler(box, y, 0.2, guided.ZerothOrder, queries=8)
    guided_x = sampler(prior, x_T, ts, cost=cost, generator=g)

    def residual(x):
        return float((box(x) - y).norm(dim=1).mean())

    assert residual(guided_x) < 0.2 * residual(free), (residual(guided_x), residual(free))
    assert cost.nfe == 40 and cost.vjp == 40
    with pytest.raises(TypeError, match="not differentiable"):
        guided.DPSSampler(box, y, 0.2)  # the autograd estimator needs derivatives


@pytest.mark.parametrize("form", ["term", "paper"])
def test_zeroth_order_draws_from_the_samplers_generators(form):
    """The same seeds give the same samples twice, and a row's sample is the same alone and
    in a batch with one generator per row (its query directions come from its generator)."""
    prior, (box, _) = _gaussian_prior(), _projection_box()
    y = torch.tensor([[1.0, 2.0], [0.0, -1.0], [2.0, 0.5]], dtype=F64)
    x_T = guided.initial_noise(prior.schedule, (3, 4), torch.Generator().manual_seed(5), dtype=F64)
    ts = guided.time_grid(6)

    def run(rows, seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        if form == "term":
            term = guided.ZerothOrder(box, y[rows], 0.1, zeta=1.0, queries=4)
            return guided.DDPM()(guided.GuidedDenoiser(prior, term), x_T[rows], ts, generator=gens)
        sampler = guided.DPSSampler(box, y[rows], 0.5, guided.ZerothOrder, queries=4)
        return sampler(prior, x_T[rows], ts, generator=gens)

    together = run([0, 1, 2], [20, 21, 22])
    torch.testing.assert_close(run([0, 1, 2], [20, 21, 22]), together, rtol=0, atol=0)
    torch.testing.assert_close(run([1], [21]), together[1:2], rtol=0, atol=0)
    other = run([1], [99])  # another stream moves the row: the directions are drawn
    assert not torch.allclose(other, together[1:2])
    # one generator for the batch: reproducible from its seed
    one = [guided.DDPM(), guided.GuidedDenoiser(prior, guided.ZerothOrder(box, y, 0.1))]
    a = one[0](one[1], x_T, ts, generator=torch.Generator().manual_seed(3))
    b = one[0](one[1], x_T, ts, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_enkg_fits_a_black_box_measurement_rows_independently():
    prior, (box, _) = _gaussian_prior(), _projection_box()
    y = torch.tensor([[1.0, 2.0]], dtype=F64)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    x_T = guided.initial_noise(prior.schedule, (3, 4), torch.Generator().manual_seed(2), dtype=F64)
    ts = guided.time_grid(20)
    sampler = guided.EnKG(box, y, particles=16, updates=2, ode_steps=2, interval=(0.0, 0.5))
    cost = priors.Cost()
    out = sampler(prior, x_T, ts, generator=gens, cost=cost)
    # 20 steps x 16 particles, plus 10 guided steps (t <= 0.5) x 2 updates x 16 x 2 ODE steps
    assert cost.nfe == 20 * 16 + 10 * 2 * 16 * 2
    free = guided.DDIM()(prior, x_T, ts)
    fit, unfit = (float((box(x) - y).norm(dim=1).mean()) for x in (out, free))
    assert fit < 0.2 * unfit, (fit, unfit)
    gens_alone = [torch.Generator().manual_seed(12)]
    alone = sampler(prior, x_T[2:], ts, generator=gens_alone)
    torch.testing.assert_close(alone, out[2:])


def test_straight_through_twin_values_and_gradient():
    op = operators.Quantization((1, 4, 4), levels=4)
    twin = operators.StraightThrough(op)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(twin(x), op(x))
    v = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(twin.vjp(x, v), v)
    assert twin.differentiable and not op.differentiable
    with pytest.raises(ValueError, match="out_shape == in_shape"):
        operators.StraightThrough(operators.AveragePoolSR((1, 4, 4), 2))


def test_derivative_free_rules_warn_and_refuse_bad_input():
    blur = operators.CircularBlur(torch.ones(3, 3) / 9, (1, 8, 8))
    y = torch.zeros(1, 1, 8, 8)
    with pytest.warns(UserWarning, match="gradient guidance"):
        guided.ZerothOrder(blur, y, 0.1)
    with pytest.warns(UserWarning, match="gradient guidance"):
        guided.EnKG(blur, y, particles=4)
    box, _ = _projection_box()
    y2 = torch.zeros(1, 2, dtype=F64)
    with pytest.raises(ValueError, match="particles"):
        guided.EnKG(box, y2, particles=1)
    with pytest.raises(ValueError, match="scale"):
        guided.EnKG(box, y2, scale=0.0)
    with pytest.raises(ValueError, match="interval"):
        guided.EnKG(box, y2, interval=(0.5, 0.2))
    with pytest.raises(ValueError, match="queries"):
        guided.ZerothOrder(box, y2, 0.1, queries=0)
    with pytest.raises(ValueError, match="smoothing"):
        guided.ZerothOrder(box, y2, 0.1, smoothing=0.0)
    prior = _gaussian_prior()
    x_T = torch.zeros(1, 4, dtype=F64)
    nan_box = operators.BlackBox(lambda x: np.full((x.shape[0], 2), np.nan), (4,), (2,))
    with pytest.raises(ValueError, match="NaN"):
        guided.EnKG(nan_box, y2, particles=2)(prior, x_T, guided.time_grid(3))
    wrong = operators.BlackBox(lambda x: x[:, :3], (4,), (2,))
    term = guided.ZerothOrder(wrong, y2, 0.1, queries=2)
    with pytest.raises(ValueError, match="expected"):
        guided.DDIM()(guided.GuidedDenoiser(prior, term), x_T, guided.time_grid(3))
