r"""Denoising diffusion restoration models (DDRM).

In the spectral space of an SVD operator :math:`A = U \operatorname{diag}(s) V^\top` the
measurement is per coordinate a noisy observation :math:`\bar y_i = (U^\top y)_i / s_i =
\bar x_i + (\sigma_y / s_i) n_i` of :math:`\bar x = V^\top x`. Working with the
variance-exploding levels :math:`\bar\sigma_t = \sigma_t / \alpha_t` (so
:math:`x_t / \alpha_t = x + \bar\sigma_t \epsilon`), one step from :math:`t` to :math:`s`
with :math:`\bar x_0 = V^\top \hat x(x_t)` sets each coordinate of
:math:`\bar x_s = V^\top x_s / \alpha_s` to

- unobserved (:math:`s_i = 0`): :math:`\bar x_{0,i} + \bar\sigma_s (\sqrt{1 - \eta^2}
  \hat\epsilon_i + \eta z_i)`, :math:`\hat\epsilon = (V^\top x_t / \alpha_t - \bar x_0) /
  \bar\sigma_t` (DDIM);
- observed, less noisy than the measurement (:math:`\bar\sigma_s < \sigma_y / s_i`):
  :math:`\bar x_{0,i} + \sqrt{1 - \eta^2}\, \bar\sigma_s (\bar y_i - \bar x_{0,i}) s_i /
  \sigma_y + \eta \bar\sigma_s z_i`;
- observed, noisier (:math:`\bar\sigma_s \geq \sigma_y / s_i`):
  :math:`(1 - \eta_b) \bar x_{0,i} + \eta_b \bar y_i + \sqrt{\bar\sigma_s^2 - \eta_b^2
  \sigma_y^2 / s_i^2}\, z_i`,

with :math:`z \sim \mathcal{N}(0, I)` (Kawar et al., 2022, eq. 8; defaults
:math:`\eta = 0.85`, :math:`\eta_b = 1`). At :math:`\sigma_y = 0` the last case always
applies and the final sample reproduces the measurement exactly. 1 NFE, no VJP per step.

**Noise scale (ours).** ``noise_scale`` :math:`= c \leq 1` draws every :math:`z` as
:math:`c\, z` and scales the initial state's noise (its :math:`\hat\epsilon` at the first
step) by :math:`c`, so every state holds :math:`c` times the noise of its level. At
:math:`c < 1` the state holds less noise than the level its denoiser is told, so the
sampler no longer targets the posterior: its samples shrink toward the posterior mean (less
spread, a higher PSNR of one sample, less diversity), a distortion-for-perception trade
(Blau & Michaeli, "The perception-distortion tradeoff", CVPR 2018). :math:`c = 1` (the
default) is eq. 8; deepinv 0.5's DDRM draws its initial state and every step's noise at
:math:`c = 1 / \sqrt 2` (``deepinv/sampling/diffusion.py``), which is why it scores higher
than eq. 8 on one sample at the same :math:`\eta`, even at :math:`\eta = 0`, where the
initial noise is the only noise of unobserved coordinates.

References:
    | Denoising Diffusion Restoration Models (Kawar et al., 2022)
    | https://arxiv.org/abs/2201.11793
"""

from __future__ import annotations

import math

import torch

from torch import Tensor

import checks

from guided.guidance import check_measurement, check_structure
from guided.sampler import Run, Sampler, SamplerState, Step
from operators import SVDOperator
from priors import randn

__all__ = ["DDRM"]


class DDRM(Sampler):
    r"""DDRM for an SVD operator (see the module).

    Arguments:
        op: The operator, with its SVD.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level (0 allowed).
        eta: :math:`\eta`, the stochasticity of unobserved and low-noise coordinates.
        eta_b: :math:`\eta_b`, the weight of the measurement in high-noise coordinates.
        noise_scale: :math:`c \in [0, 1]`, the scale of every fresh noise draw (1: eq. 8;
            below 1 the samples move toward the posterior mean, see the module; keyword only).
    """

    def __init__(
        self,
        op: SVDOperator,
        y: Tensor,
        sigma_y: float,
        eta: float = 0.85,
        eta_b: float = 1.0,
        *,
        noise_scale: float = 1.0,
    ) -> None:
        check_structure(
            op, SVDOperator, "DDRM", "U, V and singular values",
            "use guided.PiGDM or guided.DiffPIR (conjugate gradients) or guided.DPS",
        )  # fmt: skip
        self.y = check_measurement(op, y, sigma_y)
        for name, value in (("eta", eta), ("eta_b", eta_b)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        self.op, self.sigma_y, self.eta, self.eta_b = op, float(sigma_y), float(eta), float(eta_b)
        self.noise_scale = checks.number(noise_scale, "noise_scale", low=0, high=1)

    pure_noise = True  # the noise estimate is (x_t - alpha_t x_hat) / sigma_t

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        alpha_t, sigma_t, alpha_s, sigma_s = step.coefficients
        level_s = sigma_s / alpha_s
        x_hat = run.denoise(x_t, step.t)
        op = self.op
        x0 = op.Vt(x_hat)
        sv = op.singulars.to(x0.device, x0.dtype).expand_as(x0[0])
        observed = op.observed().to(x0.device).expand_as(x0[0])
        y_bar = op.Ut(self.y.to(x0.dtype)) / sv.where(observed, 1)
        noise_y = self.sigma_y / sv.where(observed, 1)  # sigma_y / s_i on observed coordinates
        z = self.noise_scale * randn(x0.shape, run.generator, dtype=x0.dtype, device=x0.device)
        eps = (op.Vt(x_t) - alpha_t * x0) / sigma_t if sigma_t > 0 else torch.zeros_like(x0)
        if step.index == 0:  # the caller's x_T holds the full noise; later states hold c times
            eps = self.noise_scale * eps
        keep = math.sqrt(1 - self.eta**2)
        free = x0 + level_s * (keep * eps + self.eta * z)
        quiet = (
            x0 + keep * level_s * (y_bar - x0) / noise_y.clamp_min(1e-30) + self.eta * level_s * z
        )
        loud_std = (level_s**2 - self.eta_b**2 * noise_y**2).clamp_min(0).sqrt()
        loud = (1 - self.eta_b) * x0 + self.eta_b * y_bar + loud_std * z
        x_s = torch.where(observed, torch.where(level_s < noise_y, quiet, loud), free)
        return alpha_s * op.V(x_s)
