"""Linear operators in float64: adjointness, pseudo-inverse identities, SVD structure."""

import pytest
import torch

from hypothesis import given, settings
from hypothesis import strategies as st

import operators

from operators import batch_dot

EXAMPLES = operators.examples()
LINEAR = sorted(n for n, (op, _) in EXAMPLES.items() if isinstance(op, operators.LinearOperator))
SVD = sorted(n for n, (op, _) in EXAMPLES.items() if isinstance(op, operators.SVDOperator))


def _random(shape, seed, batch=3):
    return torch.randn(
        batch, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _scale(*tensors):
    return max(float(t.detach().flatten(1).norm(dim=1).max()) for t in tensors)


def test_registry_covers_every_operator_class():
    classes = {type(op) for op, _ in EXAMPLES.values()}
    concrete = {
        cls
        for name in operators.__all__
        if isinstance(cls := getattr(operators, name), type)
        and issubclass(cls, operators.Operator)
        and not getattr(cls, "__abstractmethods__", None)
    }
    assert concrete <= classes, concrete - classes


@pytest.mark.parametrize("name", LINEAR)
def test_adjointness(name):
    op, shape = EXAMPLES[name]
    x, y = _random(shape, 0), _random(op.out_shape, 1)
    lhs, rhs = batch_dot(op(x), y), batch_dot(x, op.adjoint(y))
    assert float((lhs - rhs).abs().max()) <= 1e-9 * _scale(op(x), y) * _scale(x, op.adjoint(y))


@pytest.mark.parametrize("name", LINEAR)
def test_pinv_identities(name):
    op, shape = EXAMPLES[name]
    x, y = _random(shape, 2), _random(op.out_shape, 3)
    ax = op(x)
    torch.testing.assert_close(op(op.pinv(ax)), ax, rtol=1e-9, atol=1e-9)  # A A+ A = A
    pinv_y = op.pinv(y)
    torch.testing.assert_close(op.pinv(op(pinv_y)), pinv_y, rtol=1e-9, atol=1e-9)  # A+ A A+ = A+


@pytest.mark.parametrize("name", LINEAR)
def test_vjp_is_the_adjoint_and_matches_autograd(name):
    op, shape = EXAMPLES[name]
    x, v = _random(shape, 4), _random(op.out_shape, 5)
    torch.testing.assert_close(op.vjp(x, v), op.adjoint(v))
    torch.testing.assert_close(operators.Operator.vjp(op, x, v), op.adjoint(v))


@pytest.mark.parametrize("name", SVD)
def test_svd_structure(name):
    op, shape = EXAMPLES[name]
    x, y = _random(shape, 6), _random(op.out_shape, 7)
    z = op.Vt(x)
    torch.testing.assert_close(op.V(z), x, rtol=1e-12, atol=1e-12)  # V V^T = I
    torch.testing.assert_close(batch_dot(z, z), batch_dot(x, x), rtol=1e-12, atol=0)  # isometry
    w = _random(z.shape[1:], 8)
    torch.testing.assert_close(op.Vt(op.V(w)), w, rtol=1e-12, atol=1e-12)  # V^T V = I
    torch.testing.assert_close(op(x), op.U(op.singulars * op.Vt(x)), rtol=1e-12, atol=1e-12)
    # U^T is an isometry on the range of A, and U U^T projects onto it
    ax = op(x)
    torch.testing.assert_close(
        batch_dot(op.Ut(ax), op.Ut(ax)), batch_dot(ax, ax), rtol=1e-12, atol=0
    )
    projected = op.U(op.Ut(y))
    torch.testing.assert_close(op.U(op.Ut(projected)), projected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SVD)
def test_closed_form_pinv_matches_conjugate_gradients(name):
    op, _ = EXAMPLES[name]
    y = _random(op.out_shape, 9)
    iterative = operators.LinearOperator.pinv(op, y)
    torch.testing.assert_close(op.pinv(y), iterative, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("rho", [0.0, 0.3])
def test_ridge_solves_its_normal_equations(name, rho):
    """(A^T A + rho I) x = A^T y + rho x0; at rho = 0 the fit nearest x0: A x = A A+ y and
    x - x0 orthogonal to the null space (x = x0 + A+ (y - A x0))."""
    op, shape = EXAMPLES[name]
    x0, y = _random(shape, 10), _random(op.out_shape, 11)
    x = op.ridge(y, x0, rho)
    if rho > 0:
        lhs, rhs = op.gram(x) + rho * x, op.adjoint(y) + rho * x0
        torch.testing.assert_close(lhs, rhs, rtol=1e-8, atol=1e-8 * _scale(rhs))
    else:
        torch.testing.assert_close(op(x), op(op.pinv(y)), rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(op.pinv(op(x - x0)), x - x0, rtol=1e-8, atol=1e-8)
    one = op.ridge(y[:1], x0, rho)  # one measurement for every row
    torch.testing.assert_close(one[1], op.ridge(y[:1], x0[1:2], rho)[0])


@pytest.mark.parametrize("name", SVD)
def test_closed_form_ridge_matches_conjugate_gradients(name):
    op, shape = EXAMPLES[name]
    x0, y = _random(shape, 12), _random(op.out_shape, 13)
    iterative = operators.LinearOperator.ridge(op, y, x0, 0.2)
    torch.testing.assert_close(op.ridge(y, x0, 0.2), iterative, rtol=1e-7, atol=1e-7)


def test_ridge_refuses_bad_arguments():
    op, shape = EXAMPLES[LINEAR[0]]
    x0, y = _random(shape, 14), _random(op.out_shape, 15)
    for rho in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="rho"):
            op.ridge(y, x0, rho)
    with pytest.raises(ValueError, match="iterations"):
        operators.LinearOperator.ridge(op, y, x0, 0.5, iterations=0)
    with pytest.raises(ValueError, match="x0"):
        op.ridge(y, x0[..., :1], 0.5)


def test_matrix_operator_is_the_dense_pinv():
    a = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    op = operators.MatrixOperator(a)
    y = _random((3,), 1)
    torch.testing.assert_close(op.pinv(y), y @ torch.linalg.pinv(a).T)
    torch.testing.assert_close(op.singulars[:3], torch.linalg.svdvals(a))


@settings(max_examples=20, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 3),
    st.sampled_from([1, 2, 3]),
    st.integers(0, 2**16),
)
def test_block_operators_on_random_shapes(blocks_h, blocks_w, channels, factor, seed):
    shape = (channels, blocks_h * factor, blocks_w * factor)
    for op in (operators.AveragePoolSR(shape, factor), operators.Colorization(shape)):
        x, y = _random(shape, seed), _random(op.out_shape, seed + 1)
        lhs, rhs = batch_dot(op(x), y), batch_dot(x, op.adjoint(y))
        assert float((lhs - rhs).abs().max()) <= 1e-9 * (1 + float(lhs.abs().max()))
        torch.testing.assert_close(op(op.pinv(op(x))), op(x), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(op.V(op.Vt(x)), x, rtol=1e-12, atol=1e-12)


def test_average_pool_and_colorization_values():
    x = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    torch.testing.assert_close(
        operators.AveragePoolSR((1, 4, 4), 2)(x), torch.nn.functional.avg_pool2d(x, 2)
    )
    rgb = _random((3, 2, 2), 0)
    gray = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None]
    torch.testing.assert_close(operators.Colorization((3, 2, 2))(rgb), gray)


@pytest.mark.parametrize("name", LINEAR)
def test_float32_stays_float32(name):
    op, shape = EXAMPLES[name]
    x, y = _random(shape, 0).float(), _random(op.out_shape, 1).float()
    for out in (op(x), op.adjoint(y), op.pinv(y), op.gram(x)):
        assert out.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_applying_an_operator_leaves_it_unchanged(name):
    op, shape = EXAMPLES[name]
    before = {k: v.clone() for k, v in op.state_dict().items()}
    x, y = _random(shape, 0), _random(op.out_shape, 1)
    op(x)
    if isinstance(op, operators.LinearOperator):
        op.adjoint(y)
        op.pinv(y)
        op.vjp(x, y)
    after = op.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_shape_errors_name_expected_and_got(name):
    op, shape = EXAMPLES[name]
    bad = torch.zeros(2, *(n + 1 for n in shape), dtype=torch.float64)
    with pytest.raises(
        ValueError, match=rf"must have shape \(B, {', '.join(map(str, shape))}\), got"
    ):
        op(bad)


def test_bad_inputs_raise():
    op = operators.Inpainting(torch.ones(1, 4, 4), (3, 4, 4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        op.pinv(torch.full((1, 3, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="NaN or Inf"):
        op(torch.full((1, 3, 4, 4), float("inf")))
    with pytest.raises(ValueError, match="binary"):
        operators.Inpainting(torch.full((1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="broadcast"):
        operators.Inpainting(torch.ones(2, 4, 4), (3, 4, 4))
    with pytest.raises(ValueError, match="does not divide"):
        operators.AveragePoolSR((3, 10, 10), 4)
    with pytest.raises(ValueError, match="fill"):
        operators.Outpainting((3, 4, 4), 0, 0, 4, 4)
    with pytest.raises(ValueError, match="NaN"):
        operators.MatrixOperator(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="one weight per channel"):
        operators.Colorization((3, 2, 2), weights=(0.5, 0.5))


def test_noise_models():
    g = torch.Generator().manual_seed(0)
    z = torch.full((20000,), 2.0, dtype=torch.float64)
    y = operators.GaussianNoise(0.5)(z, g)
    assert abs(float(y.mean()) - 2.0) < 0.02 and abs(float(y.std()) - 0.5) < 0.01
    assert torch.equal(operators.GaussianNoise(0.0)(z), z)
    p = operators.PoissonNoise(0.1)(z, g)
    assert abs(float(p.mean()) - 2.0) < 0.02 and abs(float(p.var()) - 0.2) < 0.02
    first = operators.GaussianNoise(1.0)(z, torch.Generator().manual_seed(3))
    assert torch.equal(first, operators.GaussianNoise(1.0)(z, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="non-negative"):
        operators.PoissonNoise(1.0)(-z)
    with pytest.raises(ValueError, match="NaN"):
        operators.GaussianNoise(1.0)(z * float("nan"))
    with pytest.raises(ValueError, match="sigma"):
        operators.GaussianNoise(-1.0)


def test_masks():
    g = torch.Generator().manual_seed(0)
    for mask in (
        operators.box_mask(8, 8, 1, 2, 3, 4),
        operators.half_mask(8, 8, "top"),
        operators.random_pixel_mask(64, 64, 0.3, g),
        operators.stroke_mask(32, 32, generator=g),
    ):
        assert mask.shape[0] == 1 and bool(((mask == 0) | (mask == 1)).all())
    assert float(operators.box_mask(8, 8, 1, 2, 3, 4).sum()) == 64 - 12
    assert float(operators.half_mask(8, 8, "left")[..., :4].min()) == 1
    assert abs(float(operators.random_pixel_mask(64, 64, 0.3, g).mean()) - 0.3) < 0.05
    stroke = operators.stroke_mask(32, 32, generator=g)
    assert 0 < float(stroke.mean()) < 1
    with pytest.raises(ValueError, match="keep"):
        operators.half_mask(8, 8, "middle")
    with pytest.raises(ValueError, match="fit"):
        operators.box_mask(8, 8, 6, 6, 4, 4)


def test_place_on_canvas_matches_outpainting():
    image = _random((3, 4, 4), 0, batch=2)
    canvas = operators.place(image, (3, 8, 8), 2, 2)
    op = operators.Outpainting((3, 8, 8), 2, 2, 4, 4)
    torch.testing.assert_close(op(canvas), canvas)
    assert float(canvas.abs().sum()) == pytest.approx(float(image.abs().sum()))


def test_observed_singular_values_are_one_rule_for_pinv_and_the_spectral_methods():
    """A singular value at or below rcond is unobserved by pinv and by every spectral method
    alike (DDRM keeps the prior's coordinate there instead of dividing by it)."""
    import guided
    import priors

    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))[0]
    s = torch.tensor([2.0, 0.5, 1e-9], dtype=torch.float64)
    op = operators.MatrixOperator(u @ torch.diag(s) @ v[:3])
    observed = op.observed()
    assert observed.dtype == torch.bool and int(observed.sum()) == 2
    y = torch.randn(1, 3, generator=g, dtype=torch.float64)
    assert float(op.pinv(y).abs().max()) < 10  # 1 / 1e-9 would be 1e9
    prior = priors.GaussianMixture(
        torch.ones(1), torch.zeros(1, 4), torch.eye(4)[None], priors.LinearSchedule()
    )
    x_T = guided.initial_noise(prior.schedule, (8, 4), torch.Generator().manual_seed(0))
    x = guided.DDRM(op, y, 0.1)(prior, x_T.double(), guided.time_grid(10))
    assert float(x.abs().max()) < 10
