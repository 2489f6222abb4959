"""Classifier-free guidance: the extrapolation formula, one batched call, clear errors."""

import pytest
import torch

import guided
import priors


class Toy(priors.Denoiser):
    """x_hat = x_t / 2 + label (label -1 = unconditional gives x_t / 2)."""

    num_classes = 4

    def __init__(self):
        super().__init__(priors.CosineSchedule())
        self.calls = []

    def forward(self, x_t, t, label=None):
        self.calls.append(x_t.shape[0])
        offset = torch.where(label < 0, 0, label + 1).to(x_t.dtype).view(-1, 1)
        return x_t / 2 + offset


def test_extrapolation_and_a_single_batched_call():
    toy = Toy()
    x_t, t = torch.randn(3, 2), torch.tensor(0.5)
    label = torch.tensor([0, 1, 3])
    cost = priors.Cost()
    with priors.measure(cost, batch=3):
        out = guided.ClassifierFree(toy, 2.5)(x_t, t, label=label)
    expected = x_t / 2 + 2.5 * (label + 1).float().view(-1, 1)
    torch.testing.assert_close(out, expected)
    assert toy.calls == [6] and cost.nfe == 2  # conditional and unconditional in one call
    torch.testing.assert_close(guided.ClassifierFree(toy, 0.0)(x_t, t, label=label), x_t / 2)
    toy.calls.clear()
    plain = guided.ClassifierFree(toy, 1.0)(x_t, t, label=label)
    torch.testing.assert_close(plain, toy(x_t, t, label=label))
    assert toy.calls[0] == 3  # scale 1 is the conditional prediction: one pass


def test_errors():
    with pytest.raises(ValueError, match="class-conditional"):
        guided.ClassifierFree(
            priors.GaussianMixture(
                torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None], priors.CosineSchedule()
            ),
            2.0,
        )
    with pytest.raises(ValueError, match="scale"):
        guided.ClassifierFree(Toy(), float("nan"))
    with pytest.raises(ValueError, match="missing"):
        guided.ClassifierFree(Toy(), 2.0)(torch.zeros(1, 2), torch.tensor(0.5))


def test_rescale_matches_the_formula_per_sample():
    toy = Toy()
    x_t, t = torch.randn(3, 2), torch.tensor(0.5)
    label = torch.tensor([0, 1, 3])
    alpha, sigma = toy.schedule(t)
    w, phi = 3.0, 0.7
    out = guided.ClassifierFree(toy, w, rescale=phi)(x_t, t, label=label)
    cond, uncond = toy(x_t, t, label=label), x_t / 2
    eps = lambda x0: (x_t - alpha * x0) / sigma  # noqa: E731
    eps_cfg = eps(uncond + w * (cond - uncond))
    ratio = eps(cond).std(dim=1, keepdim=True) / eps_cfg.std(dim=1, keepdim=True)
    eps_out = phi * eps_cfg * ratio + (1 - phi) * eps_cfg
    torch.testing.assert_close(out, (x_t - sigma * eps_out) / alpha)
    # a row's result does not depend on its companions
    torch.testing.assert_close(
        guided.ClassifierFree(toy, w, rescale=phi)(x_t[1:2], t, label=label[1:2]), out[1:2]
    )


def test_interval_guides_only_inside_and_saves_the_second_pass():
    toy = Toy()
    x_t, label = torch.randn(2, 2), torch.tensor([0, 2])
    alpha, sigma = toy.schedule(torch.tensor([0.3, 0.7]))
    lo, hi = (sigma / alpha).tolist()
    cfg = guided.ClassifierFree(toy, 4.0, interval=(lo, hi))
    toy.calls.clear()
    outside = cfg(x_t, torch.tensor(0.9), label=label)
    torch.testing.assert_close(outside, toy(x_t, torch.tensor(0.9), label=label))
    assert toy.calls[0] == 2  # one pass outside the interval
    inside = cfg(x_t, torch.tensor(0.5), label=label)
    torch.testing.assert_close(
        inside, guided.ClassifierFree(toy, 4.0)(x_t, torch.tensor(0.5), label=label)
    )
    mixed = cfg(x_t, torch.tensor([0.9, 0.5]), label=label)  # per-row times
    torch.testing.assert_close(mixed[0], outside[0])
    torch.testing.assert_close(mixed[1], inside[1])
    with pytest.raises(ValueError, match="interval"):
        guided.ClassifierFree(toy, 2.0, interval=(1.0, 0.5))
    with pytest.raises(ValueError, match="rescale"):
        guided.ClassifierFree(toy, 2.0, rescale=1.5)


def test_composable_conjunction_and_negation_in_one_call():
    toy = Toy()
    x_t, t = torch.randn(4, 2), torch.tensor(0.5)
    composed = guided.ComposableFree(toy, [{"label": 0}, {"label": 1}], scales=[2.0, -0.5])
    toy.calls.clear()
    out = composed(x_t, t)
    # x_hat(c) - x_hat(null) = label + 1, so the offset is 2 * 1 - 0.5 * 2
    torch.testing.assert_close(out, x_t / 2 + 1.0)
    assert toy.calls == [12]
    with pytest.raises(ValueError, match="one scale per condition"):
        guided.ComposableFree(toy, [{"label": 0}], scales=[1.0, 2.0])
    with pytest.raises(ValueError, match="not a class"):
        guided.ComposableFree(toy, [{"label": 4}], scales=[1.0])
    with pytest.raises(ValueError, match="fixed at construction"):
        composed(x_t, t, label=torch.tensor([1, 1, 1, 1]))


class TwoConditions(priors.Denoiser):
    """x_hat = x_t / 2 + a + b + a * b (0 = dropped for both)."""

    def __init__(self):
        super().__init__(priors.CosineSchedule())
        self.calls = []

    def forward(self, x_t, t, a=None, b=None):
        self.calls.append(x_t.shape[0])
        a, b = a.view(-1, 1).to(x_t.dtype), b.view(-1, 1).to(x_t.dtype)
        return x_t / 2 + a + b + a * b


def test_dual_condition_form_of_instructpix2pix():
    toy = TwoConditions()
    x_t, t = torch.randn(3, 2), torch.tensor(0.3)
    a, b = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.5, -1.0, 2.0])
    dual = guided.DualClassifierFree(toy, "a", "b", 1.5, 7.5, null={"a": 0.0, "b": 0.0})
    out = dual(x_t, t, a=a, b=b)
    expected = x_t / 2 + (1.5 * a + 7.5 * (b + a * b)).view(-1, 1)
    torch.testing.assert_close(out, expected)
    assert toy.calls == [9]
    with pytest.raises(ValueError, match="missing"):
        dual(x_t, t, a=a)
    with pytest.raises(ValueError, match="null value"):
        guided.DualClassifierFree(toy, "a", "b", 1.0, 1.0)
    with pytest.raises(ValueError, match="different"):
        guided.DualClassifierFree(toy, "a", "a", 1.0, 1.0, null={"a": 0.0})


def test_conditions_of_the_wrong_type_or_range_on_a_shipped_prior():
    prior = priors.load("digits")
    cfg = guided.ClassifierFree(prior, 3.0)
    x_t, t = torch.zeros(2, *prior.shape), torch.tensor(0.5)
    with pytest.raises(ValueError, match="num_classes"):
        cfg(x_t, t, label=torch.tensor([1, 10]))
    with pytest.raises(TypeError, match="integers"):
        cfg(x_t, t, label=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="every row"):
        cfg(x_t, t, label=torch.tensor([1, -1]))
    with pytest.raises(ValueError, match="rows"):
        cfg(x_t, t, label=torch.tensor([1, 2, 3]))


def test_cfg_on_an_optional_vector_condition_with_a_per_row_common_condition():
    """Return-conditioned CFG of a state-conditioned MLP: the state (one per row) rides along
    in the batched pass, the dropped return is NaN, and every row equals its own formula."""
    torch.manual_seed(0)
    net = priors.MLP(2, width=16, blocks=1, conditions={"state": 3, "ret": 1}, optional=["ret"])
    torch.nn.init.normal_(net.out[-1].weight)
    den = priors.MLPDenoiser(net, priors.CosineSchedule())
    g = torch.Generator().manual_seed(1)
    x_t, t = torch.randn(4, 2, generator=g), torch.tensor(0.5)
    state, ret = torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)
    cfg = guided.ClassifierFree(den, 3.0, key="ret", null={"ret": float("nan")})
    out = cfg(x_t, t, ret=ret, state=state)
    for i in range(4):
        c = den(x_t[i : i + 1], t, state=state[i : i + 1], ret=ret[i : i + 1])
        u = den(x_t[i : i + 1], t, state=state[i : i + 1])
        torch.testing.assert_close(out[i : i + 1], u + 3.0 * (c - u))
