r"""Latent DPS: diffusion posterior sampling through a latent prior's decoder.

The DPS approximation :math:`p(y \mid z_t) \approx p(y \mid x = D(\hat z(z_t)))` with the
decoder in the likelihood (the "Latent-DPS" baseline of Rout et al., 2023, Sec. 3, and of Song
et al., 2024): the guidance term is our :class:`~guided.DPS` on the operator
:math:`A \circ D` (:class:`~guided.Decoded`),

.. math:: g = -\zeta\, w_t^p\, \nabla_{z_t} \lVert y - A(D(\hat z(z_t))) \rVert

(or the likelihood score :math:`-\nabla_{z_t} \lVert y - A(D(\hat z)) \rVert^2 / 2\sigma_y^2`
with ``zeta=None``), and :class:`LatentDPS` runs DDIM with stochasticity :math:`\eta` (1, the
default, is ancestral DDPM) on the guided latent denoiser. Each step costs one network
evaluation, one VJP through the network and one decoder pass and VJP through the decoder.

**Form.** This is the Tweedie form of :class:`~guided.DPS` (the term corrects the latent
posterior mean, and the sampler carries the correction in proportion to its step, so that
``taper`` makes one :math:`\zeta` serve several budgets; see :mod:`guided.dps`), not the
authors' update that subtracts :math:`\zeta \nabla \lVert\cdot\rVert` from :math:`z_s` after
each step (:class:`~guided.DPSSampler` on a pixel prior). The same term runs with any other
sampler as ``GuidedDenoiser(prior, DPS(Decoded(op, prior.autoencoder), y, sigma_y, zeta))``.

References:
    | Solving Linear Inverse Problems Provably via Posterior Sampling with Latent Diffusion
    | Models (Rout et al., NeurIPS 2023) https://arxiv.org/abs/2307.00619
    | Diffusion Posterior Sampling for General Noisy Inverse Problems (Chung et al., 2023)
    | https://arxiv.org/abs/2209.14687
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from guided.ddim import DDIM
from guided.dps import DPS
from guided.guidance import Guidance, GuidedDenoiser, check_differentiable, check_measurement
from guided.latent import Decoded, LatentMethod
from operators import Operator
from priors import Autoencoder, Denoiser

__all__ = ["LatentDPS"]


class LatentDPS(LatentMethod, DDIM):
    r"""DDIM (:math:`\eta`) on the latent prior guided by DPS through the decoder (see the
    module). Run as ``method(latent_prior, z_T, ts)``; it returns latents, which
    ``latent_prior.decode`` turns into images.

    Arguments:
        op: A differentiable pixel-space operator.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The measurement's noise level (the likelihood score's with ``zeta=None``).
        zeta: The normalised step :math:`\zeta`; None (the default) for the likelihood score.
        taper: The exponent :math:`p` of the signal fraction that weights the normalised
            step (:class:`~guided.DPS`; keyword only).
        eta: The sampler's stochasticity, 1 (the default) for DDPM, 0 for DDIM (keyword
            only).
    """

    method: ClassVar[str] = "LatentDPS"
    instead: ClassVar[str] = "guided.DPS or guided.DPSSampler"

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float,
        zeta: float | None = None,
        *,
        taper: float = 0.0,
        eta: float = 1.0,
    ) -> None:
        super().__init__(eta)
        self.y = check_measurement(op, y, sigma_y)
        check_differentiable(op, self.method)
        self.pixel_op, self.sigma_y, self.zeta, self.taper = op, float(sigma_y), zeta, taper
        DPS(op, self.y, sigma_y, zeta, taper=taper)  # checks the options now, not at the run
        self.terms: tuple[Guidance, ...] = ()

    def latent_terms(self, autoencoder: Autoencoder) -> tuple[Guidance, ...]:
        """The guidance terms on the latents (the DPS term through the decoder)."""
        decoded = Decoded(self.pixel_op, autoencoder)
        return (DPS(decoded, self.y, self.sigma_y, self.zeta, taper=self.taper),)

    def bind(self, autoencoder: Autoencoder) -> None:
        self.terms = self.latent_terms(autoencoder)

    def guided(self, denoiser: Denoiser) -> Denoiser:
        return GuidedDenoiser(denoiser, *self.terms)
