r"""Reverberant multi-microphone scenes for the separation app: held-out synthetic sources
(:mod:`experiments.shared.waveforms`, test split) played in shoebox rooms simulated by the
image source method of ``pyroomacoustics`` (Scheibler, Bezzam & Dokmanić, ICASSP 2018).

A scene draws, from its own seed:

- a room of 3–7 m × 3–6 m × 2.5–3.5 m with a reverberation time :math:`T_{60}` in ``rt60``
  (wall absorption and reflection order from Sabine's formula, ``pyroomacoustics.
  inverse_sabine``);
- a circular array of :math:`M` microphones (radius ``radius``) at 1.2–1.6 m height, at least
  1 m from the walls; microphone 0 is the reference;
- :math:`K` sources at 1–2 m from the array's centre at the same height, in directions at
  least 30° apart, each within the room with 0.5 m to spare;
- the sources' families: all different (``kind="mixed"``) or all the same
  (``kind="same"``, the harder case: the same kind of sound, with pitches or resonances
  from the held-out bands).

Each source's image at each microphone is its waveform convolved with the room impulse
response, cut to the waveform's length; each source's images are scaled by one gain so that
its image at the reference microphone has the RMS of its dry waveform (so the mixture is in
the prior's range, and the sources keep the level differences they were drawn with). The
mixture is the sum of the images plus white noise at ``snr`` dB below the reference
microphone's mixture power. The separation targets are the images at the reference
microphone, as in ArrayDPS (which fixes the scale and filter ambiguity of blind
separation).
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np

from scipy.signal import fftconvolve

import checks

from experiments.shared.waveforms import FAMILIES, Waveforms

__all__ = ["KINDS", "Scene", "Scenes"]

KINDS = ("mixed", "same")
#: Speed of sound (m/s) of the simulation.
SOUND = 343.0


@dataclass(frozen=True)
class Scene:
    """One simulated scene.

    Attributes:
        mixture: :math:`(M, T)` the microphones' signals.
        images: :math:`(K, M, T)` each source's image at each microphone (noise-free).
        dry: :math:`(K, T)` the sources' waveforms as drawn.
        families: Each source's family name.
        rt60: The room's target reverberation time (s).
        noise: The standard deviation of the microphones' noise.
    """

    mixture: np.ndarray
    images: np.ndarray
    dry: np.ndarray
    families: tuple[str, ...]
    rt60: float
    noise: float

    @property
    def targets(self) -> np.ndarray:
        """:math:`(K, T)` the sources' images at the reference microphone."""
        return self.images[:, 0]


class Scenes:
    r"""Reproducible scenes of one kind (see the module): ``scenes[i]`` is the same scene
    on every machine.

    Arguments:
        kind: ``"mixed"`` (the sources' families all differ) or ``"same"``.
        sources: :math:`K`, 2 or 3 (three families).
        microphones: :math:`M \ge 2`.
        samples: :math:`T`, the waveforms' length.
        rate: Samples per second.
        rt60: The range of reverberation times (s), within (0.05, 1].
        radius: The array's radius (m).
        snr: The microphones' signal-to-noise ratio (dB).
        seed: The first scene's seed (scene ``i`` uses ``seed + i``).
    """

    def __init__(
        self,
        kind: str = "mixed",
        sources: int = 2,
        microphones: int = 3,
        samples: int = 8192,
        rate: int = 8000,
        rt60: tuple[float, float] = (0.15, 0.35),
        radius: float = 0.05,
        snr: float = 30.0,
        seed: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.sources = checks.integer(sources, "sources", low=2, high=len(FAMILIES))
        self.microphones = checks.integer(microphones, "microphones", low=2)
        self.samples = checks.integer(samples, "samples", low=256)
        self.rate = checks.integer(rate, "rate", low=8000)
        low, high = checks.interval(rt60, "rt60")
        if not (0.05 < low <= high <= 1.0):
            raise ValueError(f"rt60 must be a range within (0.05, 1] s, got {rt60}")
        self.rt60 = (low, high)
        self.radius = checks.number(radius, "radius", low=0.005, high=0.5)
        self.snr = checks.number(snr, "snr", low=-20, high=120)
        self.seed = checks.integer(seed, "seed", low=0)
        self.waveforms = Waveforms("test", samples=self.samples, rate=self.rate)

    def __getitem__(self, index: int) -> Scene:
        index = checks.integer(index, "index", low=0)
        rng = np.random.default_rng([self.seed + index, KINDS.index(self.kind)])
        k = self.sources
        if self.kind == "same":
            labels = [int(rng.integers(len(FAMILIES)))] * k
        else:
            labels = [int(i) for i in rng.permutation(len(FAMILIES))[:k]]
        dry = np.stack([self.waveforms.draw(label, rng).signal for label in labels])
        rt60 = float(rng.uniform(*self.rt60))
        rirs = self._room(rng, rt60)  # K lists of M impulse responses
        images = np.stack(
            [np.stack([fftconvolve(dry[j], h)[: self.samples] for h in rirs[j]]) for j in range(k)]
        )
        for j in range(k):  # the reference image at the dry waveform's RMS
            images[j] *= _rms(dry[j]) / _rms(images[j, 0])
        clean = images.sum(0)
        noise = _rms(clean[0]) * 10 ** (-self.snr / 20)
        mixture = clean + noise * rng.standard_normal(clean.shape)
        return Scene(
            mixture=mixture,
            images=images,
            dry=dry,
            families=tuple(FAMILIES[label] for label in labels),
            rt60=rt60,
            noise=noise,
        )

    def _room(self, rng: np.random.Generator, rt60: float) -> list[list[np.ndarray]]:
        import pyroomacoustics as pra  # the audio extra: imported where it is used

        size = np.array([rng.uniform(3, 7), rng.uniform(3, 6), rng.uniform(2.5, 3.5)])
        absorption, order = pra.inverse_sabine(rt60, size)
        centre = np.array(
            [rng.uniform(1.0, size[0] - 1.0), rng.uniform(1.0, size[1] - 1.0),
             rng.uniform(1.2, 1.6)]
        )  # fmt: skip
        angles = 2 * math.pi * np.arange(self.microphones) / self.microphones
        angles += rng.uniform(0, 2 * math.pi)
        mics = centre[:, None] + self.radius * np.stack(
            [np.cos(angles), np.sin(angles), np.zeros_like(angles)]
        )
        positions = self._positions(rng, size, centre)
        room = pra.ShoeBox(
            size, fs=self.rate, materials=pra.Material(absorption), max_order=min(order, 30)
        )
        for position in positions:
            room.add_source(position)
        room.add_microphone_array(mics)
        room.compute_rir()
        return [[np.asarray(room.rir[m][j]) for m in range(self.microphones)]
                for j in range(self.sources)]  # fmt: skip

    def _positions(
        self, rng: np.random.Generator, size: np.ndarray, centre: np.ndarray
    ) -> list[np.ndarray]:
        """Source positions at 1-2 m from ``centre``, 30 degrees apart, 0.5 m from walls."""
        for _ in range(1000):
            angles = rng.uniform(0, 2 * math.pi, self.sources)
            gaps = np.abs((angles[:, None] - angles[None] + math.pi) % (2 * math.pi) - math.pi)
            if gaps[~np.eye(self.sources, dtype=bool)].min() < math.pi / 6:  # K >= 2
                continue
            distances = rng.uniform(1.0, 2.0, self.sources)
            points = [
                centre + d * np.array([math.cos(a), math.sin(a), 0.0])
                for a, d in zip(angles, distances, strict=True)
            ]
            if all(np.all(p[:2] > 0.5) and np.all(p[:2] < size[:2] - 0.5) for p in points):
                return points
        raise RuntimeError("no source positions fit the room (a guard: rooms are >= 3 m)")


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))
