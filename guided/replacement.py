r"""Replacement of the observed part of the state after each step (RePaint).

For a noiseless linear measurement :math:`y = A x`, the part of :math:`x_s` that the
operator sees is replaced by a fresh forward-noised copy of the measurement's
pseudo-inverse:

.. math:: x_s' = (I - P)\, x_s + P (\alpha_s A^+ y + \sigma_s z), \qquad P = A^+ A,
    \quad z \sim \mathcal{N}(0, I).

For inpainting and outpainting :math:`P` is the mask and this is RePaint's (and score-SDE's)
replacement; for other operators it is the range / null-space split of DDNM applied to the
noisy state. The final state (:math:`\sigma_s = 0`) satisfies :math:`A x = y` exactly.
RePaint's resampling ("time travel") needs its own walk over the grid:
:class:`guided.RePaint`.

References:
    | RePaint: Inpainting using Denoising Diffusion Probabilistic Models (Lugmayr et al., 2022)
    | https://arxiv.org/abs/2201.09865
    | Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model (Wang et al., 2023)
    | https://arxiv.org/abs/2212.00490
"""

from __future__ import annotations

from torch import Tensor

from guided.guidance import check_measurement, check_structure
from guided.projection import Projection
from operators import LinearOperator, SVDOperator, UnsupportedOperator
from priors import GeneratorLike, Schedule, randn

__all__ = ["Replacement"]


def check_noise_is_not_amplified(op: LinearOperator, sigma_y: float) -> None:
    """Raises unless ``op``'s nonzero singular values are equal (checked on SVD operators;
    other linear operators cannot show it, so they are refused with noise)."""
    alternatives = "use guided.DDNMPlus, guided.DDRM or guided.PiGDM, which model the noise"
    if not isinstance(op, SVDOperator):
        raise UnsupportedOperator(
            f"replacement copies A^+ y; with sigma_y = {sigma_y} on {type(op).__name__} (no "
            f"SVD) the noise amplification is unknown: {alternatives}"
        )
    s = op.singulars.abs()[op.observed()].flatten()
    if not s.numel():  # nothing observed, nothing amplified
        return
    if float(s.max()) > (1 + 1e-6) * float(s.min()):
        raise UnsupportedOperator(
            f"replacement copies A^+ y, which multiplies the noise (sigma_y = {sigma_y}) by up "
            f"to 1/s_min = {1 / float(s.min()):.3g} on {type(op).__name__} (singular values "
            f"{float(s.min()):.3g} to {float(s.max()):.3g}): {alternatives}"
        )


class Replacement(Projection):
    r"""Replace the observed part of :math:`x_s` by the noised measurement (see the module).

    Arguments:
        op: A linear operator with a pseudo-inverse (an inpainting mask for RePaint).
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows; it is copied as
            if noiseless.
        sigma_y: Its noise level. With noise, the operator's nonzero singular values must be
            equal (masks, outpainting, block-average SR), so that :math:`A^+ y` does not
            amplify the noise; otherwise construction fails (``TypeError``: the operator cannot
            give what replacement needs) and names the noise-aware rules.
    """

    def __init__(self, op: LinearOperator, y: Tensor, sigma_y: float = 0.0) -> None:
        check_structure(op, LinearOperator, "Replacement", "pseudo-inverse", "use guided.DPS")
        self.y = check_measurement(op, y, sigma_y)
        if sigma_y > 0:
            check_noise_is_not_amplified(op, sigma_y)
        self.op = op
        self.x_y = op.pinv(self.y)  # A^+ y, computed once

    def __call__(
        self, x_s: Tensor, s: Tensor, schedule: Schedule, generator: GeneratorLike = None
    ) -> Tensor:
        alpha_s, sigma_s = (float(c) for c in schedule(s))
        z = randn(x_s.shape, generator, dtype=x_s.dtype, device=x_s.device)
        target = alpha_s * self.x_y.to(x_s.dtype) + sigma_s * z
        project = self.op.pinv(self.op(target - x_s))  # P (target - x_s)
        return x_s + project
