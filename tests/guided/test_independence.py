"""Per-sample independence: with one generator per row, every measurement method gives a row
the same result alone as in a batch with other rows (and other measurements)."""

import pytest
import torch

import guided
import operators
import priors

F64 = torch.float64
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
    raise KeyError(name)


@pytest.mark.parametrize(
    "name",
    ["dps", "pigdm", "dps_paper", "ddrm", "diffpir", "ddnm", "replacement", "mcgdiff", "tds"],
)
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
