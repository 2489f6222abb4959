"""Nonlinear and non-differentiable operators: vjp against finite differences, black boxes."""

import numpy as np
import pytest
import torch

import operators

from operators import batch_dot

EXAMPLES = operators.examples()
NONLINEAR = sorted(  # straight-through twins' derivatives are the identity's by design
    n
    for n, (op, _) in EXAMPLES.items()
    if not isinstance(op, operators.LinearOperator | operators.StraightThrough)
    and op.differentiable
)
BLACK_BOXES = sorted(n for n, (op, _) in EXAMPLES.items() if not op.differentiable)


def _uniform(shape, seed, batch=2, low=-0.9, high=0.9):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(batch, *shape, generator=g, dtype=torch.float64)


def test_every_kind_is_present():
    assert {"phase_retrieval", "saturating_sensor", "nonlinear_blur"} <= set(NONLINEAR)
    assert {"quantization", "jpeg", "blackbox"} <= set(BLACK_BOXES)


@pytest.mark.parametrize("name", NONLINEAR)
def test_vjp_matches_finite_differences(name):
    op, shape = EXAMPLES[name]
    x, d = _uniform(shape, 0), _uniform(shape, 1, low=-1, high=1)
    v = torch.randn(2, *op.out_shape, generator=torch.Generator().manual_seed(2)).double()
    h = 1e-6
    directional = (op(x + h * d) - op(x - h * d)) / (2 * h)
    lhs, rhs = batch_dot(op.vjp(x, v), d), batch_dot(v, directional)
    torch.testing.assert_close(lhs, rhs, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", BLACK_BOXES)
def test_black_boxes_refuse_derivatives(name):
    op, shape = EXAMPLES[name]
    x, v = _uniform(shape, 0), torch.zeros(2, *op.out_shape, dtype=torch.float64)
    with pytest.raises(operators.NotDifferentiableError, match="derivative-free"):
        op.vjp(x, v)
    torch.testing.assert_close(op(x), op(x), rtol=0, atol=0)  # a function: same in, same out


def test_phase_retrieval_is_blind_to_sign_and_shift():
    op = operators.PhaseRetrieval((1, 6, 6), oversampling=2.0)
    assert op.out_shape == (1, 12, 12)
    x = _uniform((1, 6, 6), 0)
    torch.testing.assert_close(op(-x), op(x))
    # a translate inside the padding has the same magnitudes
    canvas = torch.nn.functional.pad(x, (3, 3, 3, 3))
    big = operators.PhaseRetrieval((1, 12, 12), oversampling=1.0)
    torch.testing.assert_close(big(torch.roll(canvas, (1, 2), (-2, -1))), big(canvas))
    torch.testing.assert_close(big(canvas), op(x))
    # Parseval: the unitary DFT keeps the energy of the padded image
    torch.testing.assert_close(batch_dot(op(x), op(x)), batch_dot(x, x))


def test_saturating_sensor_and_nonlinear_blur_values():
    x = _uniform((1, 6, 6), 0, low=-1, high=1)
    torch.testing.assert_close(operators.SaturatingSensor((1, 6, 6), 2.0)(x), torch.tanh(2 * x))
    identity = torch.zeros(3, 3, dtype=torch.float64)
    identity[1, 1] = 1
    blur = operators.NonlinearBlur(identity, (1, 6, 6), gamma=2.2, eps=1e-12)
    torch.testing.assert_close(blur(x), x, rtol=1e-9, atol=1e-9)  # a Dirac blurs nothing
    # a constant image stays constant, whatever the kernel
    const = torch.full((1, 1, 6, 6), 0.2, dtype=torch.float64)
    box = operators.NonlinearBlur(torch.full((3, 3), 1 / 9), (1, 6, 6), eps=1e-12)
    torch.testing.assert_close(box(const), const, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="negative"):
        operators.NonlinearBlur(torch.full((3, 3), -1 / 9), (1, 6, 6))


def test_quantization_levels():
    op = operators.Quantization((1, 4, 4), levels=4)
    x = _uniform((1, 4, 4), 0, low=-2, high=2)
    y = op(x)
    levels = torch.tensor([-1, -1 / 3, 1 / 3, 1], dtype=torch.float64)
    assert bool(((y[..., None] - levels).abs().min(-1).values < 1e-12).all())
    inside = x.abs() <= 1
    assert float((y - x)[inside].abs().max()) <= 1 / 3 + 1e-12
    with pytest.raises(ValueError, match="levels"):
        operators.Quantization((1, 4, 4), levels=1)


def test_jpeg_compresses_more_at_low_quality():
    t = torch.linspace(-1, 1, 32, dtype=torch.float64)
    image = (0.8 * torch.sin(4 * t)[:, None] * torch.cos(3 * t)[None, :]).expand(1, 3, 32, 32)
    noisy = image + 0.1 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    errors = [
        float((operators.JPEG((3, 32, 32), q)(noisy) - noisy).pow(2).mean()) for q in (95, 50, 5)
    ]
    assert errors[0] < errors[1] < errors[2]
    smooth = operators.JPEG((3, 32, 32), 95)(image)
    assert float((smooth - image).pow(2).mean()) < 1e-3  # a smooth image survives quality 95
    with pytest.raises(ValueError, match="quality"):
        operators.JPEG((3, 8, 8), quality=0)
    with pytest.raises(ValueError, match="1 or 3"):
        operators.JPEG((2, 8, 8))


def test_black_box_wraps_numpy_and_checks_what_it_returns():
    op = operators.BlackBox(lambda a: a.max(axis=(1, 2)), (3, 4), (), batched=True)
    x = _uniform((3, 4), 0)
    torch.testing.assert_close(op(x), x.amax(dim=(1, 2)))
    single = operators.BlackBox(lambda a: np.sort(a.ravel())[:2], (3, 4), (2,), batched=False)
    torch.testing.assert_close(single(x), x.flatten(1).sort(dim=1).values[:, :2])
    assert single(x.float()).dtype == torch.float32
    wrong = operators.BlackBox(lambda a: a[:, :1], (3, 4), (3, 4))
    with pytest.raises(ValueError, match=r"returned shape \(2, 1, 4\), expected \(2, 3, 4\)"):
        wrong(x)
    nan = operators.BlackBox(lambda a: a * np.nan, (3, 4), (3, 4))
    with pytest.raises(ValueError, match="NaN"):
        nan(x)
    with pytest.raises(TypeError, match="callable"):
        operators.BlackBox("not a function", (3,), (3,))


def test_planar_kinematics_geometry_and_errors():
    op = operators.PlanarKinematics([1.0, 0.8, 0.5])
    x = torch.tensor([[0.5, 0.0, -0.5]], dtype=torch.float64)  # up, up, then right
    expected = torch.tensor([[[0.0, 1.0], [0.0, 1.8], [0.5, 1.8]]], dtype=torch.float64)
    torch.testing.assert_close(op(x), expected)
    x = _uniform((3,), 4, batch=5, low=-1, high=1)
    joints = op.joints(x)
    links = (joints[:, 1:] - joints[:, :-1]).norm(dim=-1)
    torch.testing.assert_close(links, op.lengths.expand(5, 3))  # rigid links
    # a rotation of the base joint rotates every point about the origin
    turned = op.joints(x + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64))  # pi / 2
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)  # +90 degrees
    torch.testing.assert_close(turned, joints @ rotation.T)
    sensors = operators.PlanarKinematics([1.0, 0.8, 0.5], points=[3])
    torch.testing.assert_close(sensors(x), joints[:, 3:])
    with pytest.raises(ValueError, match="lengths"):
        operators.PlanarKinematics([1.0, -1.0])
    with pytest.raises(ValueError, match="points"):
        operators.PlanarKinematics([1.0, 1.0], points=[0, 2])


@pytest.mark.parametrize("name", sorted(n for n, (op, _) in EXAMPLES.items() if op.differentiable))
def test_linearize_is_the_value_and_the_vjp_of_one_pass(name):
    op, shape = EXAMPLES[name]
    x = _uniform(shape, 3)
    v = torch.randn(2, *op.out_shape, generator=torch.Generator().manual_seed(4)).double()
    value, pullback = op.linearize(x)
    torch.testing.assert_close(value, op(x), rtol=0, atol=0)
    torch.testing.assert_close(pullback(v), op.vjp(x, v), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="v"):
        op.linearize(x)[1](torch.zeros(2, *op.out_shape, 3, dtype=torch.float64))


@pytest.mark.parametrize("name", BLACK_BOXES)
def test_black_boxes_refuse_to_linearize(name):
    op, shape = EXAMPLES[name]
    with pytest.raises(operators.NotDifferentiableError, match="derivative-free"):
        op.linearize(_uniform(shape, 0))
