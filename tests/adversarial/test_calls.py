"""Adversarial table: bad inputs to operators, denoisers and samplers, and inputs of unusual
but valid kinds (NumPy scalars, integral floats, half precision) that must give the same
result as the usual ones. Every case ends in an error that names the argument, or in a
result checked against a reference: never in a silent wrong answer."""

import math
import warnings

import numpy as np
import pytest
import torch

import guided
import operators
import priors

from tests.adversarial.objects import F64, gaussian_prior, image_op, mask, measurement

INF, NAN = math.inf, math.nan
SHAPE = (1, 8, 8)


def _x(dtype=F64, shape=SHAPE, value=None):
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if value is not None:
        x.view(-1)[0] = value
    return x.to(dtype)


class Flat(priors.Denoiser):
    """A Gaussian prior on 8x8 images (exact), for samplers on image operators."""

    counts_evaluations = False

    def __init__(self) -> None:
        super().__init__(priors.LinearSchedule())
        self.inner = gaussian_prior(64)
        self.shape = SHAPE

    def forward(self, x_t, t):
        return self.inner(x_t.flatten(1), t).view_as(x_t)


def _small_op():
    return operators.CircularBlur(operators.gaussian_kernel(1.0, size=3), (1, 4, 4))


def _sampler_on_wrong_shape(make):
    """A sampler built for a 4x4 operator, run from 8x8 noise."""
    op = _small_op()
    y = op(torch.zeros(1, 1, 4, 4, dtype=F64))
    sampler, denoiser = make(op, y)
    x_T = torch.randn(2, *SHAPE, dtype=F64, generator=torch.Generator().manual_seed(1))
    return sampler(denoiser, x_T, guided.time_grid(4))


WRONG_SHAPE = {
    "DDRM": lambda op, y: (guided.DDRM(op, y, 0.1), Flat()),
    "DiffPIR": lambda op, y: (guided.DiffPIR(op, y, 0.1), Flat()),
    "MCGdiff": lambda op, y: (guided.MCGdiff(op, y, 0.1, particles=2), Flat()),
    "DDNMPlus": lambda op, y: (guided.DDNMPlus(op, y, 0.1), Flat()),
    "TDS": lambda op, y: (guided.TDS(op, y, 0.1, particles=2), Flat()),
    "DPSSampler": lambda op, y: (guided.DPSSampler(op, y), Flat()),
    "DDPM + DPS": lambda op, y: (
        guided.DDPM(), guided.GuidedDenoiser(Flat(), guided.DPS(op, y, 0.1))
    ),
    "DDIM + PiGDM": lambda op, y: (
        guided.DDIM(), guided.GuidedDenoiser(Flat(), guided.PiGDM(op, y, 0.1))
    ),
    "DDIM + DDNM": lambda op, y: (guided.DDIM(), guided.DDNM(Flat(), op, y)),
}  # fmt: skip


def _ddpm(x_T, **kw):
    return guided.DDPM()(gaussian_prior(), x_T, guided.time_grid(3), **kw)


REFUSED = [
    # --- operators: the dtype policy, the shapes and the values
    (
        "op int input",
        lambda: image_op()(_x(torch.int64)),
        TypeError,
        "x must be a real floating tensor",
    ),
    ("op bool input", lambda: image_op()(_x() > 0.5), TypeError, "x must be a real floating"),
    (
        "op complex input",
        lambda: image_op()(_x(torch.complex128)),
        TypeError,
        "x must be a real floating tensor",
    ),
    (
        "op meta input",
        lambda: image_op()(torch.empty(2, *SHAPE, device="meta")),
        ValueError,
        "meta device",
    ),
    (
        "CircularBlur float16",
        lambda: image_op()(_x(torch.float16)),
        TypeError,
        r"\(float64, float32\)",
    ),
    (
        "PhaseRetrieval bfloat16",
        lambda: operators.PhaseRetrieval(SHAPE)(_x(torch.bfloat16)),
        TypeError,
        r"\(float64, float32\)",
    ),
    ("op nan input", lambda: image_op()(_x(value=NAN)), ValueError, "x contains NaN or Inf"),
    ("op inf input", lambda: image_op()(_x(value=INF)), ValueError, "x contains NaN or Inf"),
    (
        "op wrong shape",
        lambda: image_op()(_x(shape=(1, 4, 4))),
        ValueError,
        r"x must have shape \(B, 1, 8, 8\)",
    ),
    ("op empty batch", lambda: image_op()(torch.zeros(0, *SHAPE)), ValueError, "empty batch"),
    ("op list input", lambda: image_op()([[0.0]]), TypeError, "x must be a torch.Tensor"),
    (
        "CircularBlur overflow",
        lambda: image_op()(_x(torch.float32) * 1e38),
        FloatingPointError,
        "CircularBlur's output of a finite input contains NaN or Inf",
    ),
    (
        "adjoint int y",
        lambda: image_op().adjoint(_x(torch.int32)),
        TypeError,
        "y must be a real floating tensor",
    ),
    (
        "pinv complex y",
        lambda: mask().pinv(torch.ones(1, 4, dtype=torch.complex64)),
        TypeError,
        "y must be a real floating tensor",
    ),
    (
        "vjp wrong v",
        lambda: operators.SaturatingSensor((4,)).vjp(torch.zeros(1, 4), torch.zeros(1, 3)),
        ValueError,
        r"v must have shape \(B, 4\)",
    ),
    (
        "BlackBox returns complex",
        lambda: operators.BlackBox(lambda a: a * 1j, (3,), (3,))(torch.zeros(1, 3)),
        TypeError,
        "must return real numbers",
    ),
    (
        "BlackBox overflows float32",
        lambda: operators.BlackBox(lambda a: a + 1e300, (3,), (3,))(torch.zeros(1, 3)),
        ValueError,
        "NaN or Inf in torch.float32",
    ),
    (
        "BlackBox wrong shape",
        lambda: operators.BlackBox(lambda a: a[:, :2], (3,), (3,))(torch.zeros(1, 3)),
        ValueError,
        "returned shape",
    ),
    (
        "BlackBox returns text",
        lambda: operators.BlackBox(lambda a: np.array([["a"] * 3]), (3,), (3,))(torch.zeros(1, 3)),
        TypeError,
        "must return real numbers",
    ),
    (
        "noise on int",
        lambda: operators.GaussianNoise(0.1)(torch.ones(2, dtype=torch.int64)),
        TypeError,
        "clean measurement must be a real floating",
    ),
    (
        "Poisson on negative",
        lambda: operators.PoissonNoise(0.1)(-torch.ones(2)),
        ValueError,
        "non-negative",
    ),
    # --- denoisers
    (
        "denoiser int x_t",
        lambda: gaussian_prior()(torch.zeros(2, 4, dtype=torch.int64), 0.5),
        TypeError,
        "x_t must be a real floating tensor",
    ),
    (
        "denoiser complex x_t",
        lambda: gaussian_prior()(torch.zeros(2, 4, dtype=torch.complex128), 0.5),
        TypeError,
        "x_t must be a real floating tensor",
    ),
    (
        "denoiser meta x_t",
        lambda: gaussian_prior()(torch.empty(2, 4, device="meta"), 0.5),
        ValueError,
        "meta device",
    ),
    (
        "denoiser nan x_t",
        lambda: gaussian_prior()(torch.full((2, 4), NAN, dtype=F64), 0.5),
        ValueError,
        "x_t contains NaN or Inf",
    ),
    (
        "denoiser t str",
        lambda: gaussian_prior()(torch.zeros(2, 4, dtype=F64), "0.5"),
        TypeError,
        "t must be a real time",
    ),
    (
        "denoiser t 1.5",
        lambda: gaussian_prior()(torch.zeros(2, 4, dtype=F64), 1.5),
        ValueError,
        r"t must lie in \[0, 1\]",
    ),
    (
        "denoiser t rows",
        lambda: gaussian_prior()(torch.zeros(2, 4, dtype=F64), torch.tensor([0.1, 0.2, 0.3])),
        ValueError,
        "one entry per row",
    ),
    (
        "denoiser unknown condition",
        lambda: gaussian_prior()(torch.zeros(2, 4, dtype=F64), 0.5, label=torch.tensor([1, 2])),
        TypeError,
        "takes no condition",
    ),
    (
        "denoiser wrong dimension",
        lambda: gaussian_prior()(torch.zeros(2, 5, dtype=F64), 0.5),
        ValueError,
        r"shape \(B, 4\)",
    ),
    (
        "UNet at 1e30",
        lambda: priors.load("digits")(torch.full((1, 1, 16, 16), 1e30), 0.5),
        FloatingPointError,
        "UNetDenoiser returned NaN or Inf for a finite input",
    ),
    (
        "label out of range",
        lambda: priors.load("digits")(torch.zeros(1, 1, 16, 16), 0.5, label=torch.tensor([12])),
        ValueError,
        "label",
    ),
    # --- samplers
    (
        "x_T int",
        lambda: _ddpm(torch.zeros(2, 4, dtype=torch.int64)),
        TypeError,
        "x_T must be a real floating tensor",
    ),
    (
        "x_T complex",
        lambda: _ddpm(torch.zeros(2, 4, dtype=torch.complex64)),
        TypeError,
        "x_T must be a real floating tensor",
    ),
    (
        "x_T inf",
        lambda: _ddpm(torch.full((2, 4), INF, dtype=F64)),
        ValueError,
        "x_T contains NaN or Inf",
    ),
    ("x_T list", lambda: _ddpm([[0.0] * 4]), TypeError, "x_T must be a torch.Tensor"),
    (
        "generators count",
        lambda: _ddpm(torch.zeros(2, 4, dtype=F64), generator=[torch.Generator()]),
        ValueError,
        "one per row of x_T",
    ),
    (
        "check_residual 1",
        lambda: _ddpm(torch.zeros(2, 4, dtype=F64), check_residual=1),
        TypeError,
        "check_residual must be True or False",
    ),
    (
        "ts increasing",
        lambda: guided.DDPM()(
            gaussian_prior(), torch.zeros(2, 4, dtype=F64), torch.tensor([0.0, 1.0])
        ),
        ValueError,
        "strictly decreasing",
    ),
    (
        "measurement rows",
        lambda: guided.DDRM(mask(), measurement().expand(3, 4), 0.1)(
            gaussian_prior(), torch.zeros(2, 4, dtype=F64), guided.time_grid(3)
        ),
        ValueError,
        "rows",
    ),
    (
        "DDRM on a non-SVD operator",
        lambda: guided.DDRM(
            operators.Blur(operators.gaussian_kernel(1.0, size=3), SHAPE),
            torch.zeros(1, *SHAPE),
            0.1,
        ),
        operators.UnsupportedOperator,
        "DDRM needs an SVDOperator",
    ),
    (
        "DPS on a black box",
        lambda: guided.DPS(operators.Quantization((4,)), torch.zeros(1, 4), 0.1),
        operators.UnsupportedOperator,
        "not differentiable",
    ),
    *[
        (
            f"{name} on the wrong shape",
            (lambda m=make: _sampler_on_wrong_shape(m)),
            ValueError,
            r"x_T has per-sample shape \(1, 8, 8\), but the operator .* takes \(1, 4, 4\)",
        )
        for name, make in WRONG_SHAPE.items()
    ],
]


@pytest.mark.parametrize(("thunk", "error", "match"), [c[1:] for c in REFUSED],
                         ids=[f"refused: {c[0]}" for c in REFUSED])  # fmt: skip
def test_bad_input_is_refused_by_name(thunk, error, match):
    with pytest.raises(error, match=match):
        thunk()


def _same(a, b, rtol=0.0, atol=0.0):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def _numpy_scalars_in_a_guided_run():
    def run(sigma_y, eta, steps):
        g = torch.Generator().manual_seed(3)
        x_T = torch.randn(3, 4, generator=g, dtype=F64)
        term = guided.DPS(mask(), measurement(), sigma_y, zeta=1.0)
        denoiser = guided.GuidedDenoiser(gaussian_prior(), term)
        return guided.DDIM(eta)(denoiser, x_T, guided.time_grid(steps), generator=g)

    _same(run(np.float32(0.1), np.float64(0.5), np.int64(6)), run(0.1, 0.5, 6))


def _zero_dim_tensor_number():
    a = guided.DDRM(mask(), measurement(), torch.tensor(0.1)).sigma_y
    assert a == pytest.approx(0.1) and isinstance(a, float)


def _blackbox_keeps_the_callers_tensor():
    def scribble(a):
        a[...] = 7.0  # writes into its input
        return a.sum(-1, keepdims=True)

    x = torch.zeros(2, 3, dtype=F64)
    out = operators.BlackBox(scribble, (3,), (1,))(x)
    assert bool((x == 0).all())  # the caller's tensor is untouched
    _same(out, torch.full((2, 1), 21.0, dtype=F64))


def _half_precision_where_supported():
    op = operators.MatrixOperator(torch.randn(3, 5, generator=torch.Generator().manual_seed(2)))
    x = torch.rand(4, 5, generator=torch.Generator().manual_seed(3))
    for dtype in (torch.float16, torch.bfloat16):
        out = op(x.to(dtype))
        assert out.dtype == dtype
        _same(out.float(), op(x), rtol=0.02, atol=0.02)


def _integral_floats_are_integers():
    _same(guided.time_grid(4.0), guided.time_grid(4))
    _same(operators.AveragePoolSR(SHAPE, 2.0)(_x()), operators.AveragePoolSR(SHAPE, 2)(_x()))
    _same(
        operators.AveragePoolSR(SHAPE, np.int64(2))(_x()), operators.AveragePoolSR(SHAPE, 2)(_x())
    )


def _masks_from_numpy_numbers():
    _same(
        operators.box_mask(np.int64(8), 8, 2, 2, np.int32(3), 3),
        operators.box_mask(8, 8, 2, 2, 3, 3),
    )


def _half_mask_of_two_rows_observes_one():
    assert operators.half_mask(2, 8, "top").sum() == 8


def _inf_interval_end_is_accepted_where_meant():
    cfg = guided.ClassifierFree(priors.load("digits"), 3.0, interval=(0.3, math.inf))
    assert cfg.interval == (0.3, math.inf)


def _divergence_is_reported():
    """DPS's likelihood score with a far too large step explodes: the run ends with a
    DivergenceWarning naming the method and the residual, not silently."""
    op, y = mask(), measurement()
    term = guided.DPS(op, y, 1e-3)  # score form: 1 / sigma_y^2 = 1e6
    x_T = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            guided.DDPM()(guided.GuidedDenoiser(gaussian_prior(), term), x_T, guided.time_grid(5))
        except FloatingPointError as error:  # or the NaN guard stops it, naming the terms
            assert "DPS" in str(error)
            return
    assert any(issubclass(w.category, guided.DivergenceWarning) for w in caught)
    assert "DPS" in str(
        next(w for w in caught if issubclass(w.category, guided.DivergenceWarning)).message
    )


def _a_good_run_is_not_reported():
    op = mask()
    truth = torch.tensor([[0.3, -0.2, 0.5, 0.1]], dtype=F64)
    y = op(truth) + 0.05 * torch.randn(1, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    x_T = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", guided.DivergenceWarning)
        guided.MCGdiff(op, y, 0.05, particles=8)(gaussian_prior(), x_T, guided.time_grid(50))


CORRECT = [
    ("NumPy scalars in a guided run", _numpy_scalars_in_a_guided_run),
    ("0-dim tensor as a number", _zero_dim_tensor_number),
    ("BlackBox keeps the caller's tensor", _blackbox_keeps_the_callers_tensor),
    ("half precision on a MatrixOperator", _half_precision_where_supported),
    ("integral floats are integers", _integral_floats_are_integers),
    ("masks from NumPy integers", _masks_from_numpy_numbers),
    ("half_mask of two rows", _half_mask_of_two_rows_observes_one),
    ("infinite end of a guidance interval", _inf_interval_end_is_accepted_where_meant),
    ("a diverged run is reported", _divergence_is_reported),
    ("a good run is not reported", _a_good_run_is_not_reported),
]


@pytest.mark.parametrize(
    "check", [c[1] for c in CORRECT], ids=[f"correct: {c[0]}" for c in CORRECT]
)
def test_unusual_valid_input_gives_the_reference_result(check):
    check()
