r"""Multichannel mixing by convolutive transfer functions, with the filters as unknowns: the
forward model of blind source separation with a microphone array.

Sources :math:`s_k` (:math:`k = 1..K`, each a waveform of :math:`T` samples as heard at a
reference microphone) have short-time Fourier transforms :math:`S_k(f, n)` (square-root Hann
window of ``n_fft`` samples, hop ``hop``, centred frames, zero padding); microphone
:math:`m = 1..M` receives

.. math:: Y_m(f, n) = \sum_k \sum_{\tau = 0}^{L - 1} G_{k,m}(f, \tau)\, S_k(f, n - \tau),
    \qquad y_m = \mathrm{iSTFT}(Y_m),

the convolutive transfer function (CTF) model (Talmon, Cohen & Gannot, 2009): each source's
image at each microphone is a short filter of :math:`L` frames along every frequency band.
:math:`G_{k,m}` relates microphone :math:`m` to the reference for source :math:`k`; a room
impulse response shorter than the window is about :math:`L = 1`, a reverberant one needs
more frames. The operator is linear in the sources (:class:`~operators.LinearOperator`, its
adjoint the autograd transpose of the forward map, which is exact for a linear map) and
linear in the filters, its unknowns (:class:`~operators.UnknownOperator`), stored as real and
imaginary parts, shape :math:`(K, M, F, L, 2)` with :math:`F` = ``n_fft // 2 + 1``.

:meth:`ConvolutiveTransfer.fit` estimates the filters from sources and a mixture by forward
convolutive prediction (FCP; Wang, Wichern & Le Roux, 2021), weighted least squares per
frequency,

.. math:: \hat G = \arg\min_G \sum_n w(f, n) \Big| Y_m(f, n) - \sum_\tau G(f, \tau)
    S(f, n - \tau) \Big|^2 + \lambda N \lVert G \rVert^2, \qquad
    w(f, n) = \frac{1}{\bar P(f, n) + \epsilon \max_{f,n} \bar P + 10^{-6}},

with :math:`\bar P` the mixture's power averaged over the microphones and :math:`N` the number
of frames: either for each source alone against the whole mixture (``joint=False``, as
ArrayDPS does at each sampling step, where the other sources are unknown and nearly
uncorrelated with it) or for all sources at once (``joint=True``, the exact least-squares fit
of the model, an EM M-step given estimates of every source).

**Departures from ArrayDPS's code** (``src/FCP.py`` of ``ArrayDPS/ArrayDPS``): they pad each
waveform with ``n_fft`` zeros before the transform and cut the result back; we transform the
:math:`T` samples as they are (centred frames) and invert to :math:`T` samples. Their filters
multiply the conjugate (``G_conj``); ours multiply the sources directly (the same model). Their
regression is per source only; ``joint=True`` is ours.

References:
    | Relative Transfer Function Identification Using Convolutive Transfer Function
    | Approximation (Talmon, Cohen & Gannot, IEEE TASLP 2009)
    | https://doi.org/10.1109/TASL.2009.2015090
    | Convolutive Prediction for Monaural Speech Dereverberation and Noisy-Reverberant Speaker
    | Separation (Wang, Wichern & Le Roux, IEEE/ACM TASLP 2021) https://arxiv.org/abs/2108.07376
    | ArrayDPS: Unsupervised Blind Speech Separation with a Diffusion Prior (Xu, Fan, Wang,
    | Jiang & Roy Choudhury, ICML 2025) https://arxiv.org/abs/2505.05657
"""

from __future__ import annotations

from typing import ClassVar

import torch

from torch import Tensor, nn

import checks

from operators.base import LinearOperator, check_shape
from operators.unknown import UnknownOperator

__all__ = ["ConvolutiveTransfer", "istft", "stft"]


def _window(n_fft: int, like: Tensor) -> Tensor:
    return torch.hann_window(n_fft, periodic=True, dtype=like.dtype, device=like.device).sqrt()


def stft(x: Tensor, n_fft: int, hop: int) -> Tensor:
    r"""The STFT of waveforms :math:`(\ldots, T)`: complex :math:`(\ldots, F, N)` with the
    square-root Hann window, centred frames and zero padding (ArrayDPS's transform)."""
    flat = x.reshape(-1, x.shape[-1])
    spec = torch.stft(
        flat, n_fft, hop, window=_window(n_fft, x), center=True, pad_mode="constant",
        return_complex=True,
    )  # fmt: skip
    return spec.reshape(*x.shape[:-1], *spec.shape[-2:])


def istft(spec: Tensor, n_fft: int, hop: int, length: int) -> Tensor:
    r"""The inverse of :func:`stft` (least squares over the overlapping frames), waveforms
    :math:`(\ldots, T)` of ``length`` samples."""
    flat = spec.reshape(-1, *spec.shape[-2:])
    real = torch.empty((), dtype=spec.real.dtype, device=spec.device)
    x = torch.istft(flat, n_fft, hop, window=_window(n_fft, real), center=True, length=length)
    return x.reshape(*spec.shape[:-2], length)


def _delayed(spec: Tensor, taps: int) -> Tensor:
    r""":math:`S(f, n - \tau)` for :math:`\tau = 0..L-1` (zeros before the first frame):
    :math:`(\ldots, F, N)` to :math:`(\ldots, F, N, L)`."""
    padded = nn.functional.pad(spec, (taps - 1, 0))
    frames = padded.unfold(-1, taps, 1)  # (..., F, N, L), the window ending at n
    return frames.flip(-1)


class ConvolutiveTransfer(UnknownOperator, LinearOperator):
    r"""Sources :math:`(K, T)` to an :math:`M`-microphone mixture :math:`(M, T)` through
    convolutive transfer functions (see the module).

    Arguments:
        sources: :math:`K`.
        microphones: :math:`M`.
        samples: :math:`T`, the waveforms' length.
        n_fft: The window (and transform) length, even, at most :math:`T`.
        hop: The hop between frames, at most ``n_fft // 2`` (so that the frames overlap
            enough to invert).
        taps: :math:`L`, the filters' length in frames.
        filters: Initial filters :math:`(K, M, F, L)` complex or :math:`(K, M, F, L, 2)`
            real and imaginary parts; default: every source at every microphone as at the
            reference (:math:`G(f, 0) = 1`, the other taps 0).
    """

    #: torch's FFT has no float16 / bfloat16 kernels on the CPU.
    supports_half: ClassVar[bool] = False

    def __init__(
        self,
        sources: int,
        microphones: int,
        samples: int,
        n_fft: int = 512,
        hop: int = 128,
        taps: int = 13,
        filters: Tensor | None = None,
    ) -> None:
        k = checks.integer(sources, "sources", low=1)
        m = checks.integer(microphones, "microphones", low=1)
        t = checks.integer(samples, "samples", low=2)
        n_fft = checks.integer(n_fft, "n_fft", low=2, high=t)
        if n_fft % 2:
            raise ValueError(f"n_fft must be even, got {n_fft}")
        self.n_fft = n_fft
        self.hop = checks.integer(hop, "hop", low=1, high=n_fft // 2)
        self.taps = checks.integer(taps, "taps", low=1)
        super().__init__((k, t), (m, t))
        shape = (k, m, n_fft // 2 + 1, self.taps)
        if filters is None:
            initial = torch.zeros(*shape, 2, dtype=torch.float64)
            initial[..., 0, 0] = 1.0
        else:
            if not isinstance(filters, Tensor):
                raise TypeError(f"filters must be a tensor, got {type(filters).__name__}")
            initial = torch.view_as_real(filters) if filters.is_complex() else filters
            if tuple(initial.shape) != (*shape, 2):
                raise ValueError(
                    f"filters must have shape {shape} (complex) or {(*shape, 2)} (real and "
                    f"imaginary parts), got {tuple(filters.shape)}"
                )
            checks.finite(initial, "filters")
        self.filters = nn.Parameter(initial.detach().to(torch.float64).clone())

    @property
    def frequencies(self) -> int:
        """:math:`F`, the transform's frequency bins."""
        return self.n_fft // 2 + 1

    def transfer(self) -> Tensor:
        r"""The filters as complex :math:`(K, M, F, L)`."""
        return torch.view_as_complex(self.filters)

    def _image_spectra(self, x: Tensor) -> Tensor:
        r""":math:`\sum_\tau G_{k,m}(f, \tau) S_k(f, n - \tau)`, :math:`(B, K, M, F, N)`."""
        spec = stft(x, self.n_fft, self.hop)  # (B, K, F, N)
        g = self.transfer().to(spec.dtype)
        return torch.einsum("bkfnl,kmfl->bkmfn", _delayed(spec, self.taps), g)

    def images(self, x: Tensor) -> Tensor:
        r"""Each source's image at each microphone, :math:`(B, K, M, T)` (their sum over
        :math:`k` is the mixture)."""
        self.check_input(x)
        return istft(self._image_spectra(x), self.n_fft, self.hop, self.in_shape[-1])

    def apply(self, x: Tensor) -> Tensor:
        # the sum over sources before the (linear) inverse transform: M of them, not K M
        return istft(self._image_spectra(x).sum(1), self.n_fft, self.hop, self.in_shape[-1])

    def apply_adjoint(self, y: Tensor) -> Tensor:
        # the transpose of a linear map by autograd: exact, one forward and backward pass
        with torch.enable_grad():
            x = torch.zeros(
                (y.shape[0], *self.in_shape), dtype=y.dtype, device=y.device, requires_grad=True
            )
            (g,) = torch.autograd.grad(self.apply(x), x, y)
        return g

    def project(self) -> None:
        """No constraint on the filters."""

    @torch.no_grad()
    def fit(
        self,
        x: Tensor,
        y: Tensor,
        *,
        joint: bool = False,
        ridge: float = 2e-3,
        epsilon: float = 1e-3,
    ) -> None:
        r"""Sets the filters to the FCP estimate from sources ``x`` :math:`(B, K, T)` and
        mixtures ``y`` :math:`(B, M, T)` of the same room (the rows pooled), in place (see the
        module).

        Arguments:
            x: The sources (or estimates of them).
            y: The mixture.
            joint: All sources in one least-squares fit (True) or each alone against the
                mixture (False, ArrayDPS's).
            ridge: :math:`\lambda \ge 0`, the diagonal loading relative to the number of
                frames of a row (ArrayDPS's ``lambda_reg``, 0.002 in their separation run).
            epsilon: :math:`\epsilon > 0`, the weight's floor relative to the mixture's
                largest power (ArrayDPS's ``fcp_epsilon``).
        """
        self.check_input(x)
        check_shape(y, self.out_shape, "y", half=False)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x and y must have as many rows, got {x.shape[0]} and {y.shape[0]}")
        checks.flag(joint, "joint")
        ridge = checks.number(ridge, "ridge", low=0)
        epsilon = checks.number(epsilon, "epsilon", low=0, open_low=True)
        n_fft, hop, taps = self.n_fft, self.hop, self.taps
        spec_x = stft(x.to(torch.float64), n_fft, hop)  # (B, K, F, N)
        spec_y = stft(y.to(torch.float64), n_fft, hop)  # (B, M, F, N)
        power = spec_y.abs().square().mean(1)  # (B, F, N)
        weight = 1 / (power + epsilon * power.amax((1, 2), keepdim=True) + 1e-6)
        frames = spec_x.shape[-1]
        lagged = _delayed(spec_x, taps)  # (B, K, F, N, L)
        k = lagged.shape[1]
        if joint:  # regressors: every source's lags, (F, B N, K L)
            design = lagged.permute(2, 0, 3, 1, 4).reshape(self.frequencies, -1, k * taps)
            g = self._solve(design, spec_y, weight, ridge, frames)  # (F, K L, M)
            g = g.reshape(self.frequencies, k, taps, -1).permute(1, 3, 0, 2)
        else:
            g = torch.stack(
                [
                    self._solve(
                        lagged[:, j].permute(1, 0, 2, 3).reshape(self.frequencies, -1, taps),
                        spec_y,
                        weight,
                        ridge,
                        frames,
                    )
                    for j in range(k)
                ]
            )  # (K, F, L, M)
            g = g.permute(0, 3, 1, 2)
        self.filters.copy_(torch.view_as_real(g.contiguous()).to(self.filters.dtype))

    @staticmethod
    def _solve(
        design: Tensor, spec_y: Tensor, weight: Tensor, ridge: float, frames: int
    ) -> Tensor:
        r"""Weighted ridge regression per frequency: ``design`` :math:`(F, R, P)` (rows: the
        batch's frames), the mixture :math:`(B, M, F, N)`, weights :math:`(B, F, N)`;
        returns :math:`(F, P, M)`."""
        f = design.shape[0]
        target = spec_y.permute(2, 0, 3, 1).reshape(f, -1, spec_y.shape[1])  # (F, R, M)
        w = weight.permute(1, 0, 2).reshape(f, -1, 1)  # (F, R, 1)
        gram = design.mH @ (w * design) / frames
        right = design.mH @ (w * target) / frames
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
        return torch.linalg.solve(gram + ridge * eye, right)
