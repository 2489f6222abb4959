"""deepinv both ways: native operators agree with deepinv's physics; ours run inside deepinv."""

import deepinv
import pytest
import torch

import operators

from operators import batch_dot

F64 = torch.float64


def _random(shape, seed, batch=2):
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _f64(physics):
    """The physics in float64 (``Module.to(float64)`` would drop BlurFFT's complex phase)."""
    for module in physics.modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and buffer.is_floating_point():
                setattr(module, name, buffer.to(F64))
    return physics


def _pairs():
    """(native operator, matching deepinv physics in float64, expected adapter type)."""
    gauss = operators.gaussian_kernel(1.0, size=5)
    motion = operators.motion_kernel(5, torch.Generator().manual_seed(3))
    mask = operators.box_mask(8, 8, 2, 1, 3, 4)
    srf = (0.4472 * 0.66851, 0.8781 * 0.66851, 0.1706 * 0.66851)
    box = torch.full((1, 1, 2, 2), 0.25, dtype=F64)
    return {
        "circular_blur": (
            operators.CircularBlur(motion, (2, 8, 8)),
            deepinv.physics.BlurFFT((2, 8, 8), filter=motion[None, None]),
            operators.DeepinvLinearOperator,  # BlurFFT's rfft "SVD" is redundant
        ),
        "reflect_blur": (
            operators.Blur(gauss, (1, 8, 8), "reflect"),
            deepinv.physics.Blur(gauss[None, None], padding="reflect"),
            operators.DeepinvLinearOperator,
        ),
        "bicubic_sr": (
            operators.BicubicSR((1, 12, 12), 2, padding="reflect"),
            deepinv.physics.Downsampling(
                (1, 12, 12), filter="bicubic", factor=2, padding="reflect"
            ),
            operators.DeepinvLinearOperator,
        ),
        "average_pool_sr": (
            operators.AveragePoolSR((1, 8, 8), 2),
            deepinv.physics.Downsampling((1, 8, 8), filter=box, factor=2, padding="valid"),
            operators.DeepinvLinearOperator,
        ),
        "inpainting": (
            operators.Inpainting(mask, (3, 8, 8)),
            deepinv.physics.Inpainting((3, 8, 8), mask=mask.expand(3, 8, 8).clone()),
            operators.DeepinvSVDOperator,
        ),
        "colorization": (
            operators.Colorization((3, 4, 4), weights=srf),
            deepinv.physics.Decolorize(),
            operators.DeepinvLinearOperator,  # Decolorize's V is thin
        ),
    }


PAIRS = _pairs()


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_native_and_deepinv_agree(name):
    native, physics, kind = PAIRS[name]
    adapted = operators.DeepinvOperator(_f64(physics), native.in_shape)
    assert type(adapted) is kind and adapted.out_shape == native.out_shape
    x, y = _random(native.in_shape, 0), _random(native.out_shape, 1)
    torch.testing.assert_close(adapted(x), native(x), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(adapted.adjoint(y), native.adjoint(y), rtol=1e-9, atol=1e-12)
    ax = native(x)
    torch.testing.assert_close(adapted.pinv(ax), native.pinv(ax), rtol=1e-6, atol=1e-6)


def test_adapter_keeps_the_callers_dtype_and_the_physics_dtype():
    kernel = operators.gaussian_kernel(1.0, size=3)
    physics = deepinv.physics.Blur(kernel[None, None].float(), padding="zeros")
    op = operators.DeepinvOperator(physics, (1, 6, 6))
    x = _random((1, 6, 6), 0)
    assert op(x).dtype == F64 and op.adjoint(x).dtype == F64
    assert physics.filter.dtype == torch.float32  # the physics runs in its own dtype
    native = operators.Blur(kernel, (1, 6, 6), "zeros")
    torch.testing.assert_close(op(x), native(x), rtol=1e-6, atol=1e-6)


def test_full_and_thin_decompositions_are_told_apart():
    denoising = operators.DeepinvOperator(deepinv.physics.Denoising(), (1, 4, 4))
    assert type(denoising) is operators.DeepinvSVDOperator  # U = V = I: a full basis
    thin = operators.DeepinvOperator(deepinv.physics.Decolorize(), (3, 4, 4))
    assert type(thin) is operators.DeepinvLinearOperator  # V maps 3 channels to 1


def test_nonlinear_physics_sees_images_in_zero_one():
    physics = deepinv.physics.PhaseRetrieval(
        deepinv.physics.CompressedSensing(
            m=10, img_size=(1, 3, 3), dtype=F64, rng=torch.Generator().manual_seed(0)
        )
    )
    op = operators.DeepinvOperator(physics, (1, 3, 3))
    assert type(op) is operators.DeepinvOperator and op.out_shape == (10,)
    x = _random((1, 3, 3), 0)
    torch.testing.assert_close(op(x), physics.A((x + 1) / 2))
    assert torch.equal(operators.measurement_from_deepinv(op, op(x)), op(x))


def test_measurement_conversion_matches_the_image_conversion():
    # deepinv measures x01 = (x + 1) / 2; converted, that is our measurement of x
    native, physics, _ = PAIRS["reflect_blur"]
    op = operators.DeepinvOperator(_f64(physics), native.in_shape)
    x = _random(native.in_shape, 0).clamp(-1, 1)
    y01 = physics.A((x + 1) / 2)
    torch.testing.assert_close(operators.measurement_from_deepinv(op, y01), native(x))
    torch.testing.assert_close(operators.measurement_to_deepinv(native, native(x)), y01)


@pytest.mark.parametrize("name", ["circular_blur", "inpainting", "bicubic_sr"])
def test_our_operators_inside_deepinv(name):
    native, physics, _ = PAIRS[name]
    ours = operators.as_deepinv(native, sigma=0.2, dtype=F64)
    assert ours.noise_model.sigma == pytest.approx(0.1)  # the same noise in [0, 1] units
    x01 = torch.rand(2, *native.in_shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(ours.A(x01), _f64(physics).A(x01), rtol=1e-9, atol=1e-12)
    y = ours.A(x01)
    torch.testing.assert_close(ours.A_adjoint(y), physics.A_adjoint(y), rtol=1e-9, atol=1e-12)
    assert abs(float(ours.adjointness_test(x01))) < 1e-9
    # deepinv's pseudo-inverse (closed form when decomposable, else its solver at tol 1e-4)
    # is consistent with the measurement
    torch.testing.assert_close(ours.A(ours.A_dagger(y)), y, rtol=1e-3, atol=1e-3)
    if isinstance(native, operators.SVDOperator):
        assert isinstance(ours, deepinv.physics.DecomposablePhysics)
        z = _random(native.in_shape, 3)
        gamma = 0.7  # prox of gamma/2 ||Ax - y||^2 at z, closed form vs normal equations
        prox = ours.prox_l2(z, y, gamma)
        residual = gamma * native.adjoint(native(prox) - y) + prox - z
        assert float(residual.abs().max()) < 1e-9


def test_deepinv_ddrm_runs_on_our_svd_operator():
    native = operators.Inpainting(operators.box_mask(8, 8, 2, 2, 4, 4), (1, 8, 8))
    physics = operators.as_deepinv(native, sigma=0.02)

    class Shrink(torch.nn.Module):
        def forward(self, x, sigma):
            return 0.5 + (x - 0.5) / (1 + torch.as_tensor(sigma) ** 2)

    x01 = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = physics.A(x01)
    ddrm = deepinv.sampling.DDRM(Shrink(), sigmas=torch.linspace(1, 0, 10).tolist())
    with torch.random.fork_rng():  # deepinv's DDRM draws from the global generator
        torch.manual_seed(0)
        out = ddrm(y, physics)
    assert out.shape == x01.shape and bool(torch.isfinite(out).all())
    observed = native.mask.bool().expand_as(out)
    error = (out - x01).abs()
    assert float(error[observed].mean()) < 0.1  # DDRM keeps the observed pixels
    assert float(error[observed].mean()) < float(error[~observed].mean())


def test_adapter_errors():
    with pytest.raises(TypeError, match="deepinv Physics"):
        operators.DeepinvOperator(torch.nn.Identity(), (1, 4, 4))
    with pytest.raises(TypeError, match="Operator"):
        operators.as_deepinv(torch.nn.Identity())
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        operators.as_deepinv(operators.SaturatingSensor((1, 4, 4)), sigma=-1)
    op = operators.DeepinvOperator(deepinv.physics.Inpainting((1, 4, 4), mask=0.5), (1, 4, 4))
    with pytest.raises(ValueError, match=r"must have shape \(B, 1, 4, 4\), got"):
        op(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        op.pinv(torch.full((1, 1, 4, 4), float("nan")))


def test_adjoint_consistency_of_the_deepinv_examples():
    for name, (op, shape) in operators.examples().items():
        if isinstance(op, operators.DeepinvLinearOperator):
            x, y = _random(shape, 0), _random(op.out_shape, 1)
            lhs, rhs = batch_dot(op(x), y), batch_dot(x, op.adjoint(y))
            assert float((lhs - rhs).abs().max()) < 1e-9 * float(x.norm() * y.norm()), name
