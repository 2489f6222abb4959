r"""A real orthonormal Fourier basis of :math:`\mathbb{R}^{H \times W}`.

The unitary DFT :math:`X = F x / \sqrt{HW}` of a real image is Hermitian,
:math:`X_{-k} = \overline{X_k}`, so only half of it is free. Pairing each frequency with its
mirror gives the real basis of cosines and sines: for every frequency :math:`k` with
:math:`k \neq -k` (one of each mirror pair) the two coordinates
:math:`\sqrt{2}\,\mathrm{Re}\,X_k` and :math:`\sqrt{2}\,\mathrm{Im}\,X_k`, and for the
self-mirrored frequencies (the constant, and the Nyquist rows/columns of even sizes) the one
coordinate :math:`\mathrm{Re}\,X_k`. That is exactly :math:`HW` coordinates, and the map is
orthogonal. (``deepinv.physics.BlurFFT`` uses ``view_as_real(rfft2)`` instead, which has
:math:`2H(\lfloor W/2 \rfloor + 1) > HW` coordinates and so is not a basis.)

Coordinates are stored as ``[Re (paired), Im (paired), Re (self-mirrored)]`` along one axis
of length :math:`HW`. A convolution acts on a pair as multiplication by the complex number
:math:`\hat h_k`, that is a rotation by its phase and a scaling by :math:`|\hat h_k|`, which is
how circular blurs become :class:`~operators.base.SVDOperator` s (the phase goes into
:math:`U`).
"""

from __future__ import annotations

import math

import torch

from torch import Tensor

__all__ = ["RealFourier"]


class RealFourier:
    r"""The orthonormal real Fourier basis of :math:`H \times W` images (see the module).

    Arguments:
        height: :math:`H`.
        width: :math:`W`.
    """

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = int(height), int(width)
        h, w = self.height, self.width
        wr = w // 2 + 1
        mirrored_cols = [0] + ([w // 2] if w % 2 == 0 and w > 1 else [])
        paired, partners, real = [], [], []
        for k2 in range(wr):
            for k1 in range(h):
                flat = k1 * wr + k2
                if k2 not in mirrored_cols:
                    paired.append(flat)
                elif (-k1) % h == k1:
                    real.append(flat)
                elif k1 < (-k1) % h:
                    paired.append(flat)
                    partners.append((len(paired) - 1, ((-k1) % h) * wr + k2))
        self.paired = torch.tensor(paired, dtype=torch.long)
        self.real = torch.tensor(real, dtype=torch.long)
        #: Positions (in ``paired``) of pairs whose mirror lies in the half spectrum too.
        self.mirrored = torch.tensor([i for i, _ in partners], dtype=torch.long)
        self.mirrors = torch.tensor([j for _, j in partners], dtype=torch.long)
        self.half = (h, wr)
        if 2 * len(paired) + len(real) != h * w:  # pragma: no cover - a bug, not bad input
            raise AssertionError("the real Fourier basis lost coordinates")

    @property
    def size(self) -> int:
        """The number of coordinates, :math:`HW`."""
        return self.height * self.width

    def pack(self, spectrum: Tensor) -> Tensor:
        r"""The coordinates of a Hermitian half spectrum ``(..., H, W // 2 + 1)``, shape
        ``(..., HW)``."""
        flat = spectrum.flatten(-2)
        pairs = flat[..., self.paired]
        return torch.cat(
            [math.sqrt(2) * pairs.real, math.sqrt(2) * pairs.imag, flat[..., self.real].real],
            dim=-1,
        )

    def diagonal(self, multiplier: Tensor) -> Tensor:
        r"""The coordinates' multipliers ``(..., HW)`` of a real diagonal multiplier of the half
        spectrum ``(..., H, W // 2 + 1)`` (both coordinates of a pair get the pair's value)."""
        flat = multiplier.flatten(-2)
        pairs = flat[..., self.paired]
        return torch.cat([pairs, pairs, flat[..., self.real]], dim=-1)

    def unpack(self, z: Tensor) -> Tensor:
        r"""The Hermitian half spectrum ``(..., H, W // 2 + 1)`` of coordinates ``(..., HW)``
        (the inverse of :meth:`pack`; mirror entries inside the half spectrum are filled)."""
        n = len(self.paired)
        a, b, r = z[..., :n], z[..., n : 2 * n], z[..., 2 * n :]
        pairs = torch.complex(a, b) / math.sqrt(2)
        flat = z.new_zeros(*z.shape[:-1], self.half[0] * self.half[1], dtype=pairs.dtype)
        flat[..., self.paired] = pairs
        flat[..., self.mirrors] = pairs[..., self.mirrored].conj()
        flat[..., self.real] = torch.complex(r, torch.zeros_like(r))
        return flat.unflatten(-1, self.half)

    def analysis(self, x: Tensor) -> Tensor:
        """Image ``(..., H, W)`` to coordinates ``(..., HW)``."""
        return self.pack(torch.fft.rfft2(x, norm="ortho"))

    def synthesis(self, z: Tensor) -> Tensor:
        """Coordinates ``(..., HW)`` to image ``(..., H, W)``."""
        return torch.fft.irfft2(self.unpack(z), s=(self.height, self.width), norm="ortho")

    def phase_of(self, spectrum: Tensor) -> Tensor:
        r"""The unit phase :math:`\hat h / |\hat h|` of the half spectrum of a real filter
        (1 where :math:`\hat h = 0`), exactly :math:`\pm 1` on self-mirrored frequencies so
        that multiplying by it keeps spectra Hermitian."""
        magnitude = spectrum.abs()
        phase = torch.where(magnitude > 0, spectrum / magnitude.clamp_min(1e-300), 1)
        flat = phase.flatten(-2).clone()
        sign = torch.where(spectrum.flatten(-2)[..., self.real].real < 0, -1.0, 1.0)
        flat[..., self.real] = torch.complex(sign, torch.zeros_like(sign)).to(flat.dtype)
        return flat.unflatten(-1, self.half)
