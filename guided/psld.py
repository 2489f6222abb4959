r"""PSLD: posterior sampling with latent diffusion (Rout et al., NeurIPS 2023).

Latent DPS (:class:`~guided.LatentDPS`) only asks that the decoded estimate
:math:`D(\hat z)` fit the measurement; it does not ask that the latent be one the encoder
would give for an image that fits it, and decoders are many-to-one. PSLD adds the "gluing"
term: project the decoded estimate on the measurement's solution set and ask that encoding
the result return :math:`\hat z`,

.. math:: \gamma\, \nabla_{z_t} \big\lVert \hat z - E\big(A^+ y + (I - A^+ A)\, D(\hat z)\big)
    \big\rVert, \qquad \hat z = \hat z(z_t)

(Rout et al., Alg. 2, their Eq. 7 with the norm, as in their code), beside the DPS term
:math:`\omega\, \nabla_{z_t} \lVert y - A(D(\hat z)) \rVert`. Both are written as guidance terms
on the latent posterior mean (:class:`Gluing` and :class:`~guided.DPS` through
:class:`~guided.Decoded`), pooled into one VJP through the network, and :class:`PSLD` runs
DDIM (:math:`\eta`) on the guided latent denoiser. Per step: one network evaluation and VJP,
two decoder passes and VJPs (one per term), one encoder pass and VJP.

**Departures from the authors' code** (``stable-diffusion/ldm/models/diffusion/psld.py`` of
``LituRout/PSLD``):

- **Projection.** They write :math:`A^\top` for the projection's :math:`A^+`; the two agree for
  inpainting (orthonormal rows), where their experiments use it. We use the pseudo-inverse
  (:meth:`operators.LinearOperator.pinv`), so the glued image satisfies :math:`A x = y` for any
  linear operator (their super-resolution with :math:`A^\top` does not project).
- **Form.** Their update subtracts the gradient of :math:`\gamma \lVert\cdot\rVert + \omega
  \lVert\cdot\rVert` from the DDIM step's :math:`z_s` (their defaults :math:`\gamma = 0.1`,
  :math:`\omega = 1`, 1000 DDIM steps, :math:`\eta = 0`); ours corrects the posterior mean (the
  Tweedie form of our :class:`~guided.DPS`, with its ``taper`` so that one setting serves
  several budgets), so their values are not ours: our defaults are the likelihood score for
  the measurement and :math:`\gamma = 1`, not tuned.
- **Per sample.** Their norms are taken over the whole batch (coupling its samples); ours per
  sample. Their measurement term passes :math:`A(D(\hat z))` through the noise model (adding
  fresh noise to the prediction); ours does not. Their encoder draws from the autoencoder's
  posterior (``get_first_stage_encoding``); ours is deterministic
  (:meth:`priors.Autoencoder.encode`, the mean for a KL autoencoder).

References:
    | Solving Linear Inverse Problems Provably via Posterior Sampling with Latent Diffusion
    | Models (Rout, Raoof, Daras, Caramanis, Dimakis & Shakkottai, NeurIPS 2023)
    | https://arxiv.org/abs/2307.00619
"""

from __future__ import annotations

from typing import ClassVar

import torch

from torch import Tensor

import checks

from guided.guidance import Guidance, check_measurement, check_structure
from guided.latent_dps import LatentDPS
from operators import LinearOperator, Operator
from priors import Autoencoder, Schedule, record
from priors.tweedie import append_dims

__all__ = ["PSLD", "Gluing"]


class Gluing(Guidance):
    r"""PSLD's gluing term on a latent prior: :math:`v = -\gamma\, w_t^p\, \nabla_{\hat z}
    \lVert \hat z - E(A^+ y + (I - A^+ A) D(\hat z)) \rVert` per sample (see the module),
    :math:`w_t` the signal fraction of :class:`~guided.DPS`'s taper.

    Arguments:
        op: The pixel-space linear operator.
        y: The measurement (checked by the caller or here).
        autoencoder: The latent prior's autoencoder.
        gamma: The weight :math:`\gamma \ge 0`.
        taper: The exponent :math:`p \ge 0` of the signal fraction (0: none; keyword only).
    """

    def __init__(
        self,
        op: LinearOperator,
        y: Tensor,
        autoencoder: Autoencoder,
        gamma: float,
        *,
        taper: float = 0.0,
    ) -> None:
        super().__init__()
        check_structure(
            op, LinearOperator, "PSLD's gluing term", "its pseudo-inverse projects on Ax = y",
            "use guided.LatentDPS for other operators",
        )  # fmt: skip
        self.y = check_measurement(op, y, None)
        if not isinstance(autoencoder, Autoencoder):
            raise TypeError(
                f"autoencoder must be a priors.Autoencoder, got {type(autoencoder).__name__}"
            )
        # pixel_op, not op: the run's checks read a term's op as acting on the sampled latents
        self.pixel_op, self.autoencoder = op, autoencoder
        self.gamma = checks.number(gamma, "gamma", low=0)
        self.taper = checks.number(taper, "taper", low=0)

    def vector(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        rows = x_hat.shape[0]
        with torch.enable_grad():
            z = x_hat.detach().requires_grad_(True)
            x = self.autoencoder.decode(z)
            glued = self.pixel_op.ridge(self.y.to(x.dtype), x, 0.0)  # x + A+(y - A x)
            e = (self.autoencoder.encode(glued) - z).flatten(1)
            norm = e.pow(2).sum(1).clamp_min(1e-30).sqrt()
            (grad,) = torch.autograd.grad(norm.sum(), z)
        record(decoder_vjp_rows=rows, encoder_vjp_rows=rows)
        step = torch.full((rows,), -self.gamma, dtype=grad.dtype, device=grad.device)
        if self.taper > 0:
            alpha_t, sigma_t = schedule(t)
            step = step * (alpha_t**2 / (alpha_t**2 + sigma_t**2)).to(step) ** self.taper
        return grad * append_dims(step, grad.ndim)


class PSLD(LatentDPS):
    r"""DDIM (:math:`\eta`) on a latent prior guided by DPS through the decoder and the gluing
    term (see the module). Run as ``method(latent_prior, z_T, ts)``; it returns latents.

    Arguments:
        op: A pixel-space linear operator.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The measurement's noise level (the likelihood score's with ``zeta=None``).
        zeta: The DPS term's normalised step (the authors' :math:`\omega`); None (the
            default) for the likelihood score.
        gamma: The gluing weight :math:`\gamma` (keyword only).
        taper: The exponent :math:`p` of the signal fraction weighting both terms (keyword
            only).
        eta: The sampler's stochasticity, 1 (the default) for DDPM (keyword only).
    """

    method: ClassVar[str] = "PSLD"

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float,
        zeta: float | None = None,
        *,
        gamma: float = 1.0,
        taper: float = 0.0,
        eta: float = 1.0,
    ) -> None:
        check_structure(
            op, LinearOperator, "PSLD", "its gluing term projects on Ax = y by the pseudo-inverse",
            "use guided.LatentDPS for other operators",
        )  # fmt: skip
        super().__init__(op, y, sigma_y, zeta, taper=taper, eta=eta)
        self.gamma = checks.number(gamma, "gamma", low=0)

    def latent_terms(self, autoencoder: Autoencoder) -> tuple[Guidance, ...]:
        assert isinstance(self.pixel_op, LinearOperator)  # checked at construction
        gluing = Gluing(self.pixel_op, self.y, autoencoder, self.gamma, taper=self.taper)
        return (*super().latent_terms(autoencoder), gluing)
