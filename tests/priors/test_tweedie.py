import torch

from hypothesis import given, settings
from hypothesis import strategies as st

from priors import tweedie
from tests.conftest import SCHEDULES


def _noisy(name, t_values, shape, seed):
    g = torch.Generator().manual_seed(seed)
    schedule = SCHEDULES[name]()
    t = torch.tensor(t_values, dtype=torch.float64)
    alpha_t, sigma_t = schedule(t)
    x = torch.randn((len(t_values), *shape), generator=g, dtype=torch.float64)
    eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
    x_t = tweedie.append_dims(alpha_t, x.ndim) * x + tweedie.append_dims(sigma_t, x.ndim) * eps
    return x, eps, x_t, alpha_t, sigma_t


times = st.lists(st.floats(0.01, 0.99), min_size=1, max_size=6)
shapes = st.sampled_from([(3,), (2, 4), (1, 3, 3)])


@settings(max_examples=30, deadline=None)
@given(times, shapes, st.sampled_from(sorted(SCHEDULES)), st.integers(0, 2**16))
def test_round_trips(t_values, shape, name, seed):
    x, eps, x_t, alpha_t, sigma_t = _noisy(name, t_values, shape, seed)
    close = {"rtol": 1e-10, "atol": 1e-10}
    # the definitions: the true x gives the true eps and v
    torch.testing.assert_close(tweedie.eps_from_x0(x_t, x, alpha_t, sigma_t), eps, **close)
    a = tweedie.append_dims(alpha_t, x.ndim)
    s = tweedie.append_dims(sigma_t, x.ndim)
    torch.testing.assert_close(
        tweedie.v_from_x0(x_t, x, alpha_t, sigma_t), a * eps - s * x, **close
    )
    # and every conversion inverts
    for to, back in [
        (tweedie.eps_from_x0, tweedie.x0_from_eps),
        (tweedie.score_from_x0, tweedie.x0_from_score),
        (tweedie.v_from_x0, tweedie.x0_from_v),
    ]:
        torch.testing.assert_close(
            back(x_t, to(x_t, x, alpha_t, sigma_t), alpha_t, sigma_t), x, **close
        )


def test_score_is_minus_eps_over_sigma():
    x, eps, x_t, alpha_t, sigma_t = _noisy("cosine", [0.3, 0.7], (5,), 0)
    score = tweedie.score_from_x0(x_t, x, alpha_t, sigma_t)
    torch.testing.assert_close(score, -eps / sigma_t[:, None], rtol=1e-12, atol=1e-12)


def test_coefficients_follow_input_dtype():
    x_t = torch.ones(2, 3, dtype=torch.float32)
    eps = tweedie.eps_from_x0(x_t, x_t, torch.tensor(0.5, dtype=torch.float64), 0.5)
    assert eps.dtype == torch.float32


def test_one_times_coefficients_are_numbers_with_the_tensor_paths_results():
    """A sampler's 0-d CPU coefficients take the float path; it agrees with the tensor path
    (per-row coefficients) to float rounding and keeps the input's dtype, and coefficients
    that need a gradient keep it."""
    g = torch.Generator().manual_seed(0)
    schedule = SCHEDULES["cosine"]()
    for dtype in (torch.float32, torch.float64):
        x_t = torch.randn(4, 3, generator=g, dtype=dtype)
        pred = torch.randn(4, 3, generator=g, dtype=dtype)
        alpha_t, sigma_t = schedule(torch.tensor(0.37, dtype=torch.float64))
        assert tweedie.coefficients(x_t, alpha_t, sigma_t) == (float(alpha_t), float(sigma_t))
        rows = alpha_t.expand(4), sigma_t.expand(4)
        for f in (tweedie.eps_from_x0, tweedie.x0_from_eps, tweedie.score_from_x0,
                  tweedie.x0_from_score, tweedie.v_from_x0, tweedie.x0_from_v):  # fmt: skip
            one = f(x_t, pred, alpha_t, sigma_t)
            assert one.dtype == dtype
            torch.testing.assert_close(one, f(x_t, pred, *rows))
    alpha = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(tweedie.x0_from_v(x_t, pred, alpha, 0.8).sum(), alpha)
    assert torch.isfinite(grad) and grad != 0
