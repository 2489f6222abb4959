"""Blur and bicubic operators: the real Fourier basis, kernels, boundary conditions."""

import pytest
import torch

from hypothesis import given, settings
from hypothesis import strategies as st

import operators

from operators import batch_dot


def _random(shape, seed, batch=2):
    return torch.randn(
        batch, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**16))
def test_real_fourier_basis_is_orthonormal(h, w, seed):
    basis = operators.RealFourier(h, w)
    x = _random((3, h, w), seed)
    z = basis.analysis(x)
    assert z.shape == (2, 3, h * w)
    torch.testing.assert_close(basis.synthesis(z), x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z.norm(dim=-1), x.flatten(-2).norm(dim=-1), rtol=1e-12, atol=0)
    u = _random((3, h * w), seed + 1)
    torch.testing.assert_close(basis.analysis(basis.synthesis(u)), u, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(3, 9),
    st.integers(3, 9),
    st.sampled_from([1, 3]),
    st.sampled_from([1, 3]),
    st.integers(0, 2**16),
)
def test_circular_blur_svd_on_random_shapes(h, w, size, channels, seed):
    g = torch.Generator().manual_seed(seed)
    kernel = torch.rand(channels, size, size, generator=g, dtype=torch.float64)
    kernel = kernel / kernel.sum(dim=(-2, -1), keepdim=True)
    op = operators.CircularBlur(kernel, (channels, h, w))
    x, y = _random(op.in_shape, seed), _random(op.in_shape, seed + 1)
    torch.testing.assert_close(op.U(op.singulars * op.Vt(x)), op(x), rtol=1e-10, atol=1e-12)
    lhs, rhs = batch_dot(op(x), y), batch_dot(x, op.adjoint(y))
    assert float((lhs - rhs).abs().max()) <= 1e-9 * float(x.norm() * y.norm())
    z = _random((channels, h * w), seed + 2)
    torch.testing.assert_close(op.Ut(op.U(z)), z, rtol=1e-12, atol=1e-12)  # U^T U = I
    # the same operator as deepinv's direct circular convolution
    direct = operators.Blur(kernel, op.in_shape, "circular")
    torch.testing.assert_close(op(x), direct(x), rtol=1e-10, atol=1e-12)


def test_circular_blur_is_a_convolution():
    # a single bright pixel spreads into the kernel, centred on it (true convolution)
    kernel = torch.tensor([[0.0, 0.1, 0.0], [0.0, 0.5, 0.3], [0.0, 0.1, 0.0]], dtype=torch.float64)
    op = operators.CircularBlur(kernel, (1, 5, 5))
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[..., 2, 2] = 1
    torch.testing.assert_close(op(x)[0, 0, 1:4, 1:4], kernel, rtol=0, atol=1e-14)
    # periodic: the right neighbour of the last column is the first
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[..., 2, 4] = 1
    assert float(op(x)[0, 0, 2, 0]) == pytest.approx(0.3)


def test_kernels():
    g = torch.Generator().manual_seed(0)
    motion = operators.motion_kernel(9, g)
    again = operators.motion_kernel(9, torch.Generator().manual_seed(0))
    assert torch.equal(motion, again)  # the generator alone decides the kernel
    assert not torch.equal(motion, operators.motion_kernel(9, g))
    for kernel in (motion, operators.gaussian_kernel(1.5), operators.gaussian_kernel((1, 3), 30)):
        assert kernel.dtype == torch.float64 and kernel.ndim == 2
        assert float(kernel.min()) >= 0 and float(kernel.sum()) == pytest.approx(1, abs=1e-12)
        assert kernel.shape[0] % 2 == 1
    gauss = operators.gaussian_kernel(2.0, size=7)
    assert gauss.shape == (7, 7) and torch.equal(gauss, gauss.flip(0).flip(1))


def test_bad_kernels_and_shapes():
    ok = torch.full((3, 3), 1 / 9)
    with pytest.raises(ValueError, match="negative"):
        operators.CircularBlur(ok - 0.2 * torch.eye(3), (1, 8, 8))
    with pytest.raises(ValueError, match="sum to 1"):
        operators.Blur(2 * ok, (1, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        operators.CircularBlur(torch.full((2, 2), 0.25), (1, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        operators.CircularBlur(ok * float("nan"), (1, 8, 8))
    with pytest.raises(ValueError, match="larger than the image"):
        operators.CircularBlur(torch.full((9, 9), 1 / 81), (1, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        operators.CircularBlur(torch.full((2, 3, 3), 1 / 9), (3, 8, 8))
    with pytest.raises(ValueError, match="padding"):
        operators.Blur(ok, (1, 8, 8), "mirror")
    with pytest.raises(ValueError, match="does not divide"):
        operators.BicubicSR((1, 10, 10), 4)
    with pytest.raises(ValueError, match="sigma"):
        operators.gaussian_kernel(-1.0)
    with pytest.raises(ValueError, match="odd"):
        operators.motion_kernel(4, torch.Generator())


def test_bicubic_sr_keeps_constants_and_downsamples():
    op = operators.BicubicSR((1, 16, 16), 2)
    const = torch.full((1, 1, 16, 16), 0.3, dtype=torch.float64)
    torch.testing.assert_close(op(const), torch.full((1, 1, 8, 8), 0.3, dtype=torch.float64))
    # a smooth image is close to its plain subsampling
    t = torch.linspace(0, 1, 16, dtype=torch.float64)
    smooth = torch.sin(2 * t)[:, None] * torch.cos(3 * t)[None, :]
    y = op(smooth[None, None])
    assert float((y - smooth[None, None, ::2, ::2]).abs().max()) < 0.1


def test_valid_blur_crops():
    op = operators.Blur(torch.full((3, 5), 1 / 15), (1, 8, 9), "valid")
    assert op.out_shape == (1, 6, 5)
    x = _random((1, 8, 9), 0)
    torch.testing.assert_close(op(x), torch.nn.functional.avg_pool2d(x, (3, 5), stride=1))
