r"""Denoising diffusion null-space model (DDNM), noiseless form.

The denoised estimate keeps its null-space part and takes the range part from the
measurement:

.. math:: \hat x_y = A^+ y + (I - A^+ A)\, \hat x = \hat x + A^+ (y - A \hat x),

so :math:`A \hat x_y = y` at every step; any sampler then runs on :math:`\hat x_y`. The authors'
code steps with :math:`x_s = \alpha_s \hat x_y + \sigma_s (\eta z + \sqrt{1 - \eta^2}\,
\hat\epsilon)`, :math:`\eta = 0.85` (``functions/svd_ddnm.py``): DDRM's :math:`\eta`, whose
noise is :math:`\eta \sigma_s`, not DDIM's (:class:`guided.DDIM` with ``eta=0.85`` scales the
DDPM posterior's standard deviation, which is 1.2 to 3.3 times smaller on a 100-step uniform
grid of the linear schedule than :math:`\sigma_s`, so it injects that much less noise). No
network VJP is needed. For noisy measurements the paper's DDNM+ scales the correction by the
noise levels (:class:`guided.DDNMPlus`, a sampler); :class:`DDNM` refuses :math:`\sigma_y > 0`
rather than silently overfitting the noise.

References:
    | Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model (Wang et al., 2023)
    | https://arxiv.org/abs/2212.00490
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from guided.guidance import check_measurement, check_structure
from operators import LinearOperator
from priors import Denoiser, Wrapper

__all__ = ["DDNM"]


class DDNM(Wrapper):
    r"""The range--null-space corrected denoiser (see the module).

    Arguments:
        prior: The prior's denoiser.
        op: A linear operator with a pseudo-inverse.
        y: The noiseless measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: Must be 0 (for noisy data use :class:`guided.DDNMPlus`).
    """

    def __init__(
        self, prior: Denoiser, op: LinearOperator, y: Tensor, sigma_y: float = 0.0
    ) -> None:
        check_structure(op, LinearOperator, "DDNM", "pseudo-inverse", "use guided.DPS")
        y = check_measurement(op, y, sigma_y)
        if sigma_y > 0:
            raise ValueError(
                "DDNM is the noiseless form: sigma_y must be 0 "
                "(use guided.DDNMPlus, PiGDM or DDRM)"
            )
        super().__init__(prior)
        self.op, self.y = op, y

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        x_hat = self.prior(x_t, t, **cond)
        return x_hat + self.op.pinv(self.y.to(x_hat.dtype) - self.op(x_hat))
