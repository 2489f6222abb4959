r"""A grey-level prior on colour images: channel by channel, or luminance and chrominance;
and, by the same channel-by-channel wrapper, independent sources from a one-source prior.

Both wrappers model a colour image as independent grey images, each denoised by the one
grey prior (:math:`C = 1`), so that every sampler and guidance rule runs on RGB images
:math:`(B, 3, H, W)` unchanged.

- :class:`PerChannel`: the red, green and blue channels independently,
  :math:`\hat x_c = D(x_{t,c}, t)`. It ignores that the channels of a photograph are
  strongly correlated.
- :class:`LumaChroma`: the orthonormal opponent transform of each pixel,

  .. math:: z = O x, \qquad O = \begin{pmatrix} 1/\sqrt3 & 1/\sqrt3 & 1/\sqrt3 \\
      1/\sqrt2 & -1/\sqrt2 & 0 \\ 1/\sqrt6 & 1/\sqrt6 & -2/\sqrt6 \end{pmatrix},

  decorrelates photographs' colours far better (the luminance carries most of the
  variance). Because :math:`O` is orthonormal, :math:`O x_t = \alpha_t z + \sigma_t O
  \epsilon` with white noise again, so the channels of :math:`z` can be denoised one by
  one. The luminance :math:`z_0 = \sqrt3\, m` is a scaled grey image (:math:`m`, the mean of
  the three channels, lies in [-1, 1] like the prior's data); :math:`m_t = z_{0,t} / \sqrt3`
  has noise :math:`\sigma_t / \sqrt3`, so it is denoised at the time :math:`t'` whose
  half log-SNR is :math:`\lambda_t + \log\sqrt3`, given :math:`x_{t'} = \alpha_{t'} m_t /
  \alpha_t` (:math:`= \sqrt3\, \sigma_{t'} m_t / \sigma_t`, the form used where
  :math:`\alpha_t < \sigma_t`, so that pure noise, :math:`\alpha_t = 0`, is defined), and
  scaled back. The two chrominance channels go to the prior as they are (a
  low-contrast grey image). The result is the exact posterior mean of the prior that
  makes :math:`m`, :math:`z_1` and :math:`z_2` independent with the grey prior's law; the
  tests check this on a Gaussian grey prior.

Which is better on photographs is an empirical question; the restore app (``colour=``)
runs either, and the natural prior's card reports both.

:class:`PerChannel` takes any one-channel prior and any number of channels: from a prior of
single-source waveforms :math:`(1, T)` it is the prior of :math:`K` independent sources
:math:`(K, T)`, the product prior of ArrayDPS's separation (Xu et al., ICML 2025).
"""

from __future__ import annotations

import math

from typing import Any

import torch

from torch import Tensor

import checks

from priors.conditions import per_row
from priors.denoiser import Denoiser, Wrapper

__all__ = ["OPPONENT", "LumaChroma", "PerChannel"]

#: The orthonormal opponent colour transform (rows: luminance, red-green, yellow-blue).
OPPONENT = torch.tensor(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
        [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)],
    ],
    dtype=torch.float64,
)


class PerChannel(Wrapper):
    r"""A one-channel prior applied to each of ``channels`` channels independently (see the
    module): colour images :math:`(B, 3, H, W)` from a grey prior, or, from a prior of
    single-source waveforms :math:`(1, T)`, :math:`K` independent sources :math:`(B, K, T)`
    (the separation app's prior, ArrayDPS's "independent source priors").

    Each row's channels go to the prior as rows of their own (:math:`B C` rows, so a call
    counts :math:`B C` network evaluations); conditions given per row are repeated for each
    of its channels.

    Arguments:
        prior: A prior of one-channel samples, shape :math:`(1, *)`.
        channels: :math:`C \ge 1`, the number of independent channels.
    """

    def __init__(self, prior: Denoiser, channels: int = 3) -> None:
        super().__init__(prior)
        shape = tuple(getattr(prior, "shape", ()))
        if len(shape) < 2 or shape[0] != 1:
            raise ValueError(
                f"prior must be a one-channel prior, shape (1, H, W) or (1, T), got {shape}"
            )
        self.channels = checks.integer(channels, "channels", low=1)
        self.shape = (self.channels, *shape[1:])

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        c = self.channels
        if x_t.ndim != len(self.shape) + 1 or x_t.shape[1] != c:
            raise ValueError(
                f"x_t must have {c} channels, shape (B, {c}, ...) with "
                f"{len(self.shape) - 1} more axes, got {tuple(x_t.shape)}"
            )
        b = x_t.shape[0]
        t_rows = (t.expand(b) if t.ndim == 0 else t).repeat_interleave(c)
        single = x_t.reshape(c * b, 1, *x_t.shape[2:])
        return self.prior(
            single, t_rows, **per_row(cond, b, lambda v: v.repeat_interleave(c, 0))
        ).reshape(x_t.shape)


class LumaChroma(Wrapper):
    """A grey prior on the luminance and the two chrominances of the orthonormal opponent
    transform (see the module)."""

    def __init__(self, prior: Denoiser) -> None:
        super().__init__(prior)
        shape = tuple(getattr(prior, "shape", ()))
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"prior must be a grey-level image prior (1, H, W), got {shape}")
        self.shape = (3, *shape[1:])

    @staticmethod
    def _check(x_t: Tensor) -> None:
        if x_t.ndim != 4 or x_t.shape[1] != 3:
            raise ValueError(f"x_t must be colour images (B, 3, H, W), got {tuple(x_t.shape)}")

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        self._check(x_t)
        b = x_t.shape[0]
        o = OPPONENT.to(device=x_t.device, dtype=x_t.dtype)
        z_t = torch.einsum("kc,bchw->bkhw", o, x_t)
        t_rows = t.expand(b) if t.ndim == 0 else t
        schedule = self.schedule
        t_luma = schedule.time_of(schedule.log_snr(t_rows) + 0.5 * math.log(3))
        alpha_t, sigma_t = (c.to(x_t.dtype).view(b, 1, 1, 1) for c in schedule(t_rows))
        alpha_luma, sigma_luma = (c.to(x_t.dtype).view(b, 1, 1, 1) for c in schedule(t_luma))
        # alpha_luma / alpha_t = sqrt(3) sigma_luma / sigma_t (the shifted log-SNR); the second
        # form where the signal is the smaller, so that neither divides by zero: at pure noise
        # (alpha_t = 0) the luminance is still handed over, scaled by its limit
        signal = alpha_t >= sigma_t
        ratio = torch.where(
            signal,
            alpha_luma / alpha_t.where(signal, 1),
            math.sqrt(3) * sigma_luma / sigma_t.where(~signal, 1),
        )
        m_t = ratio * (z_t[:, :1] / math.sqrt(3))
        luma = math.sqrt(3) * self.prior(m_t, t_luma, **cond)
        chroma = self.prior(
            z_t[:, 1:].reshape(2 * b, 1, *x_t.shape[2:]),
            t_rows.repeat_interleave(2),
            **per_row(cond, b, lambda v: v.repeat_interleave(2, 0)),
        ).reshape(b, 2, *x_t.shape[2:])
        z = torch.cat([luma, chroma], dim=1)
        return torch.einsum("kc,bkhw->bchw", o, z)
