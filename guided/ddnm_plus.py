r"""DDNM+: the range--null-space correction for noisy measurements.

With noisy data :math:`y = A x + \sigma_y n`, the full DDNM correction would copy the noise
into the estimate. DDNM+ scales it and lowers the step's own noise by what the correction
injects. In an ancestral step :math:`x_s = a\, \hat x + b\, x_t + \tau z` (DDPM posterior:
:math:`a = \alpha_s - b \alpha_t`, :math:`b = \sqrt{\sigma_s^2 - \tau^2} / \sigma_t`),

.. math:: \hat x_y = \hat x - \lambda A^+ (A \hat x - y), \qquad
    \lambda = \min\Big(1, \frac{\tau}{a \sigma_y}\Big),

carries measurement noise of standard deviation :math:`a \lambda \sigma_y` in the range of
:math:`P = A^+ A`, so the step adds :math:`\tau' = \sqrt{\tau^2 - (a \lambda \sigma_y)^2}`
there and :math:`\tau` in the null space (Wang et al., 2023, eq. 17-19, where
:math:`\Phi_t` is a scalar for all pixels; here only the range part is lowered, which is
where the injected noise lives). At :math:`\sigma_y = 0` this is DDNM with ancestral steps.
1 NFE, no VJP per step.

References:
    | Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model (Wang et al., 2023)
    | https://arxiv.org/abs/2212.00490
"""

from __future__ import annotations

import math

from typing import Any

from torch import Tensor

from guided.ddim import ddim_coefficients
from guided.guidance import check_measurement
from guided.sampler import Sampler
from operators import LinearOperator
from priors import Denoiser, GeneratorLike, randn

__all__ = ["DDNMPlus"]


class DDNMPlus(Sampler):
    r"""DDNM+ with ancestral steps (see the module).

    Arguments:
        op: A linear operator with a pseudo-inverse.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level (0 gives DDNM).
    """

    def __init__(self, op: LinearOperator, y: Tensor, sigma_y: float) -> None:
        if not isinstance(op, LinearOperator):
            raise TypeError(
                f"DDNM+ needs a LinearOperator (pseudo-inverse), got {type(op).__name__}: "
                "use guided.DPS"
            )
        self.y = check_measurement(op, y, sigma_y)
        self.op, self.sigma_y = op, float(sigma_y)

    def step(
        self,
        denoiser: Denoiser,
        x_t: Tensor,
        t: Tensor,
        s: Tensor,
        carry: dict[str, Any],
        *,
        generator: GeneratorLike = None,
        **cond: Any,
    ) -> Tensor:
        alpha_t, sigma_t = (float(c) for c in denoiser.schedule(t))
        alpha_s, sigma_s = (float(c) for c in denoiser.schedule(s))
        a, b, tau = ddim_coefficients(alpha_t, sigma_t, alpha_s, sigma_s, 1.0)
        noise = a * self.sigma_y
        lam = 1.0 if noise <= tau else tau / noise
        x_hat = denoiser(x_t, t, **cond)
        op = self.op
        x_hat = x_hat - lam * op.pinv(op(x_hat) - self.y.to(x_hat.dtype))
        z = randn(x_t.shape, generator, dtype=x_t.dtype, device=x_t.device)
        tau_range = math.sqrt(max(0.0, tau**2 - (lam * noise) ** 2))
        z_range = op.pinv(op(z))
        return a * x_hat + b * x_t + tau * z - (tau - tau_range) * z_range
