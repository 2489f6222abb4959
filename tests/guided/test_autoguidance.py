"""AutoGuidance: the weak model plus w times the difference, the main model at w = 1 (one
evaluation), two evaluations otherwise, conditions reach both models, and a weak model with
another schedule, shape or conditioning is refused."""

import pytest
import torch

import guided
import priors

F64 = torch.float64


def _mixture(means, schedule=None):
    means = torch.tensor(means, dtype=F64)
    k, d = means.shape
    return priors.GaussianMixture(
        torch.full((k,), 1.0 / k, dtype=F64), means, 0.3 * torch.eye(d, dtype=F64).expand(k, d, d),
        schedule or priors.LinearSchedule(),
    )  # fmt: skip


def test_the_guided_prediction_extrapolates_from_the_weak_model():
    main, weak = _mixture([[1.0, -1.0], [-2.0, 0.5]]), _mixture([[0.5, -0.5], [-1.0, 0.0]])
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.tensor(0.4)
    with torch.no_grad():
        a, b = main(x, t), weak(x, t)
        torch.testing.assert_close(guided.AutoGuidance(main, weak, 2.5)(x, t), b + 2.5 * (a - b))
        torch.testing.assert_close(guided.AutoGuidance(main, weak, 0.0)(x, t), b)
        for scale, nfe in ((1.0, 1), (2.0, 2)):
            cost = priors.Cost()
            with priors.measure(cost, batch=5):
                out = guided.AutoGuidance(main, weak, scale)(x, t)
            assert cost.nfe == nfe
        torch.testing.assert_close(out, 2 * a - b)


def test_conditions_reach_both_models():
    seen = []

    class Recording(priors.Denoiser):
        def __init__(self, tag):
            super().__init__(priors.LinearSchedule())
            self.tag = tag

        def forward(self, x_t, t, **cond):
            seen.append((self.tag, cond.get("label")))
            return x_t

    label = torch.tensor([3])
    guided.AutoGuidance(Recording("main"), Recording("weak"), 2.0)(
        torch.zeros(1, 2), torch.tensor(0.5), label=label
    )
    assert [tag for tag, _ in seen] == ["main", "weak"]
    assert all(value is label for _, value in seen)


def test_mismatched_or_bad_input_is_refused():
    main = _mixture([[1.0, -1.0]])
    with pytest.raises(ValueError, match="schedule"):
        guided.AutoGuidance(main, _mixture([[1.0, -1.0]], priors.CosineSchedule()), 2.0)
    with pytest.raises(ValueError, match="shape"):
        guided.AutoGuidance(main, _mixture([[1.0, -1.0, 0.0]]), 2.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            guided.AutoGuidance(main, main, bad)
    with pytest.raises(TypeError, match="weak"):
        guided.AutoGuidance(main, torch.nn.Identity(), 2.0)
