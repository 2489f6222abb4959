"""Per-sample independence: with one generator per row, every measurement method gives a row
the same result alone as in a batch with other rows (and other measurements)."""

import pytest
import torch

import guided
import operators
import priors

F64 = torch.float64
# these check that rows are independent, not that every short run fits its measurement
pytestmark = pytest.mark.filterwarnings("ignore::guided.DivergenceWarning")
SHAPE = (1, 4, 4)


class Flat(priors.Denoiser):
    counts_evaluations = False

    def __init__(self, prior):
        super().__init__(prior.schedule)
        self.prior, self.shape = prior, SHAPE

    def forward(self, x_t, t):
        return self.prior(x_t.flatten(1), t).view_as(x_t)


def _prior():
    g = torch.Generator().manual_seed(0)
    mixture = priors.GaussianMixture(
        torch.tensor([0.3, 0.7], dtype=F64),
        torch.randn(2, 16, generator=g, dtype=F64),
        torch.eye(16, dtype=F64).expand(2, 16, 16) * 0.5,
        priors.LinearSchedule(),
    )
    return Flat(mixture)


OP = operators.Inpainting(operators.box_mask(4, 4, 1, 1, 2, 2), SHAPE)


def _method(name, y, sigma_y):
    prior = _prior()
    if name == "dps":
        return guided.DDPM(), guided.GuidedDenoiser(prior, guided.DPS(OP, y, sigma_y)), None
    if name == "pigdm":
        return guided.DDPM(), guided.GuidedDenoiser(prior, guided.PiGDM(OP, y, sigma_y)), None
    if name == "dps_paper":
        return guided.DPSSampler(OP, y, zeta=1.0), prior, None
    if name == "ddrm":
        return guided.DDRM(OP, y, sigma_y), prior, None
    if name == "diffpir":
        return guided.DiffPIR(OP, y, sigma_y), prior, None
    if name == "ddnm":
        return guided.DDIM(eta=0.85), guided.DDNM(prior, OP, y), None
    if name == "replacement":
        return guided.DDPM(), prior, guided.Replacement(OP, y)
    if name == "mcgdiff":
        return guided.MCGdiff(OP, y, sigma_y, particles=4), prior, None
    if name == "tds":
        return guided.TDS(OP, y, sigma_y, particles=4), prior, None
    if name == "tds_tweedie":
        return guided.TDS(OP, y, sigma_y, particles=4, twist="tweedie"), prior, None
    raise KeyError(name)


NAMES = [
    "dps", "pigdm", "dps_paper", "ddrm", "diffpir", "ddnm", "replacement", "mcgdiff", "tds",
    "tds_tweedie",
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_a_row_does_not_depend_on_its_batch(name):
    sigma_y = 0.0 if name in ("ddnm", "replacement") else 0.1
    g = torch.Generator().manual_seed(1)
    truth = torch.randn(3, *SHAPE, generator=g, dtype=F64)
    y = OP(truth) + sigma_y * torch.randn(3, *SHAPE, generator=g, dtype=F64) * OP.mask
    x_T = torch.randn(3, *SHAPE, generator=g, dtype=F64)
    ts = guided.time_grid(8)

    def run(rows):
        sampler, denoiser, projection = _method(name, y[rows], sigma_y)
        gens = [torch.Generator().manual_seed(100 + r) for r in rows]
        return sampler(denoiser, x_T[rows], ts, projection=projection, generator=gens)

    together = run([0, 1, 2])
    alone = run([1])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(together[0], together[1])


@pytest.mark.parametrize("method", [guided.TDS, guided.MCGdiff])
def test_particle_rows_do_not_depend_on_their_batch_when_some_systems_resample(
    method, monkeypatch
):
    """Rows whose systems resample at different steps: the batch must not make a system
    resample when its own effective sample size is above the threshold."""
    import guided.smc

    ess_calls = []
    original = guided.smc.effective_sample_size

    def spy(log_w):
        ess = original(log_w)
        if log_w.ndim == 2 and log_w.shape[0] > 1:
            ess_calls.append(ess / log_w.shape[-1])
        return ess

    monkeypatch.setattr(guided.smc, "effective_sample_size", spy)
    g = torch.Generator().manual_seed(7)
    truth = torch.randn(4, *SHAPE, generator=g, dtype=F64)
    sigma_y = 0.1
    y = OP(truth) + sigma_y * torch.randn(4, *SHAPE, generator=g, dtype=F64) * OP.mask
    y[0] = 0.0  # a measurement near the prior's bulk: weights stay even longer
    x_T = torch.randn(4, *SHAPE, generator=g, dtype=F64)
    ts = guided.time_grid(12)

    def run(rows):
        sampler = method(OP, y[rows], sigma_y, particles=8, ess=0.5)
        gens = [torch.Generator().manual_seed(200 + r) for r in rows]
        return sampler(_prior(), x_T[rows], ts, generator=gens)

    together = run([0, 1, 2, 3])
    # the guard: at some step some systems were below the threshold and some above
    mixed = [bool((e < 0.5).any() and (e >= 0.5).any()) for e in ess_calls]
    assert any(mixed), "no step had both resampling and non-resampling systems"
    for r in range(4):
        torch.testing.assert_close(together[r : r + 1], run([r]), rtol=1e-10, atol=1e-10)
