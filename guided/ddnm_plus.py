r"""DDNM+: the range--null-space correction for noisy measurements.

With noisy data :math:`y = A x + \sigma_y n`, the full DDNM correction would copy the noise
into the estimate. DDNM+ scales it and lowers the step's own noise by what the correction
injects. In an ancestral step :math:`x_s = a\, \hat x + b\, x_t + \tau z` (DDPM posterior:
:math:`a = \alpha_s - b \alpha_t`, :math:`b = \sqrt{\sigma_s^2 - \tau^2} / \sigma_t`),

.. math:: \hat x_y = \hat x - \lambda A^+ (A \hat x - y), \qquad
    \lambda = \min\Big(1, \frac{\tau}{a \sigma_y}\Big),

carries measurement noise of standard deviation :math:`a \lambda \sigma_y` in the range of
:math:`P = A^+ A`, so the step adds :math:`\tau' = \sqrt{\tau^2 - (a \lambda \sigma_y)^2}`
there and :math:`\tau` in the null space. For an :class:`~operators.SVDOperator` this is done
per singular value, as in the paper (Wang et al., 2023, eq. 17-19): in the spectral
coordinates :math:`\bar y_i = (U^\top y)_i / s_i` carry noise :math:`\sigma_y / s_i`, so
:math:`\lambda_i = \min(1, \tau s_i / (a \sigma_y))` and
:math:`\tau_i' = \sqrt{\tau^2 - (a \lambda_i \sigma_y / s_i)^2}`, which keeps ill-conditioned
operators from amplifying the noise, provided the tiny singular values are dropped: the
coordinates with :math:`s_i` below ``cutoff`` times the largest are left to the prior (the
authors' deblurring operators zero singular values below 0.03). Measured on the digits prior
with a Gaussian blur of width 1 at :math:`\sigma_y = 0.05` (2 images, 50 steps): 8.4 dB
without a cutoff, 25.3 dB at 0.03, 32.2 dB at 0.1, 31.7 dB at 0.3. For other linear operators
one scalar
:math:`\lambda` treats :math:`A^+ n` as white, which holds for masks. At :math:`\sigma_y = 0`
this is DDNM with ancestral steps. 1 NFE, no VJP per step.

References:
    | Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model (Wang et al., 2023)
    | https://arxiv.org/abs/2212.00490
"""

from __future__ import annotations

import math

import torch

from torch import Tensor

import checks

from guided.ddim import ddim_coefficients
from guided.guidance import check_measurement, check_structure
from guided.sampler import Run, Sampler, SamplerState, Step
from operators import LinearOperator, SVDOperator
from priors import randn

__all__ = ["DDNMPlus"]


class DDNMPlus(Sampler):
    r"""DDNM+ with ancestral steps (see the module).

    Arguments:
        op: A linear operator with a pseudo-inverse.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level (0 gives DDNM).
        cutoff: For SVD operators, singular values below ``cutoff`` times the largest count
            as unobserved (in :math:`[0, 1)`).
    """

    pure_noise = True  # DDIM coefficients and the range-space correction: no 1 / alpha_t

    def __init__(self, op: LinearOperator, y: Tensor, sigma_y: float, cutoff: float = 0.1) -> None:
        check_structure(op, LinearOperator, "DDNM+", "pseudo-inverse", "use guided.DPS")
        self.y = check_measurement(op, y, sigma_y)
        self.op, self.sigma_y = op, float(sigma_y)
        self.cutoff = checks.number(cutoff, "cutoff", low=0, high=1, open_high=True)

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        a, b, tau = ddim_coefficients(*step.coefficients, 1.0)
        x_hat = run.denoise(x_t, step.t)
        z = randn(x_t.shape, run.generator, dtype=x_t.dtype, device=x_t.device)
        if isinstance(self.op, SVDOperator):
            x_hat, z = self._spectral(x_hat, z, a, tau)
        else:
            x_hat, z = self._scalar(x_hat, z, a, tau)
        return a * x_hat + b * x_t + z

    def _scalar(self, x_hat: Tensor, z: Tensor, a: float, tau: float) -> tuple[Tensor, Tensor]:
        """One lambda for the whole range (white A^+ n): the corrected estimate and noise."""
        op, noise = self.op, a * self.sigma_y
        lam = 1.0 if noise <= tau else tau / noise
        x_hat = x_hat - lam * op.pinv(op(x_hat) - self.y.to(x_hat.dtype))
        tau_range = math.sqrt(max(0.0, tau**2 - (lam * noise) ** 2))
        return x_hat, tau * z - (tau - tau_range) * op.pinv(op(z))

    def _spectral(self, x_hat: Tensor, z: Tensor, a: float, tau: float) -> tuple[Tensor, Tensor]:
        """One lambda per singular value: the corrected estimate and noise."""
        op = self.op
        xb = op.Vt(x_hat)
        yb = op.Ut(self.y.to(xb.dtype))
        sv = op.singulars.to(xb.device, xb.dtype).expand_as(xb[0])
        observed = op.observed().to(xb.device).expand_as(xb[0])
        observed = observed & (sv.abs() > self.cutoff * float(sv.abs().max()))
        safe = sv.where(observed, 1.0).abs()
        noise = a * self.sigma_y / safe  # noise of a * y_bar_i per coordinate
        lam = torch.where(noise <= tau, 1.0, tau / noise.clamp_min(1e-300)).where(observed, 0.0)
        y_bar = yb / sv.where(observed, 1.0)
        xb = xb - lam * (xb - y_bar)
        tau_i = (tau**2 - (lam * noise) ** 2).clamp_min(0).sqrt().where(observed, tau)
        return op.V(xb), op.V(tau_i * op.Vt(z))
