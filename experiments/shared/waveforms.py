r"""Synthetic single-source waveforms for the audio prior and the separation scenes: three
families drawn reproducibly from an explicit generator, with the generator settings of the
held-out split kept out of training.

Families (``label``), at ``rate`` samples per second:

0. **Harmonic tones**: a fundamental :math:`f_0` with vibrato (rate 4–7 Hz, depth 0.5–3%),
   harmonics up to 0.45 ``rate`` with amplitudes :math:`h^{-\alpha}` (:math:`\alpha \in [0.8,
   2]`, random phases) and an attack–decay–sustain–release envelope.
1. **Formant-filtered pulse trains** (voice-like): an impulse train at :math:`f_0` with 0–2%
   period jitter through three resonators (formants in 300–900, 900–2400 and 2400–3500 Hz,
   bandwidths 60–150 Hz), under a syllable-rate (3–6 Hz) amplitude modulation.
2. **Percussive bursts**: 2–5 bursts of noise at random onsets, each decaying exponentially
   (10–150 ms) through a resonator at a centre frequency :math:`f_c` (bandwidth 10–50% of it).

Each waveform is scaled to a peak of 0.25 to 0.9 (the priors' data live in [-1, 1]) and starts
after up to a fifth of its length of silence.

**Held-out settings.** Each family's main frequency (:math:`f_0` of tones, in 100–800 Hz; of
pulse trains, 80–320 Hz; :math:`f_c` of bursts, 200–3000 Hz) is drawn log-uniformly within
bands: its log range is cut into six equal bands, the training split draws from the even ones
and the held-out split from the odd ones, so a held-out source's pitch or resonance is never
one the prior was trained on (the separation app's same-family scenes draw both sources from
there).
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np
import torch

from scipy.signal import lfilter
from torch import Tensor

import checks

__all__ = ["FAMILIES", "Waveforms", "bands"]

FAMILIES = ("tone", "pulse", "burst")
#: Each family's main frequency range (Hz), cut into :data:`BANDS` log-equal bands.
RANGES = {"tone": (100.0, 800.0), "pulse": (80.0, 320.0), "burst": (200.0, 3000.0)}
BANDS = 6
SPLITS = ("train", "test")


def bands(family: str, split: str) -> list[tuple[float, float]]:
    """The frequency bands (Hz) of ``family``'s main frequency in ``split`` (see the module)."""
    low, high = RANGES[family]
    edges = np.exp(np.linspace(math.log(low), math.log(high), BANDS + 1))
    first = 0 if split == "train" else 1
    return [(float(edges[i]), float(edges[i + 1])) for i in range(first, BANDS, 2)]


@dataclass(frozen=True)
class Drawn:
    """One waveform and what made it: its family and main frequency (Hz)."""

    signal: np.ndarray
    label: int
    frequency: float


def _resonator(x: np.ndarray, centre: float, bandwidth: float, rate: float) -> np.ndarray:
    """A two-pole resonator at ``centre`` Hz of ``bandwidth`` Hz, unit gain at the centre."""
    r = math.exp(-math.pi * bandwidth / rate)
    theta = 2 * math.pi * centre / rate
    a = [1.0, -2 * r * math.cos(theta), r * r]
    gain = abs(np.polyval(a[::-1], np.exp(-1j * theta)))  # |A(e^{j theta})|
    return lfilter([gain], a, x)


def _envelope(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """An attack-decay-sustain-release envelope over ``n`` samples."""
    attack, decay = rng.uniform(0.005, 0.1), rng.uniform(0.05, 0.3)
    sustain, release = rng.uniform(0.3, 0.9), rng.uniform(0.05, 0.2)
    t = np.arange(n) / rate
    env = np.where(t < attack, t / attack, 1.0)
    falling = (t >= attack) & (t < attack + decay)
    env = np.where(falling, 1 - (1 - sustain) * (t - attack) / decay, env)
    env = np.where(t >= attack + decay, sustain, env)
    end = n / rate
    return env * np.clip((end - t) / release, 0.0, 1.0)


def _tone(n: int, rate: float, f0: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / rate
    vibrato, depth = rng.uniform(4, 7), rng.uniform(0.005, 0.03)
    phase0 = rng.uniform(0, 2 * math.pi)
    # the phase of f0 (1 + depth sin(2 pi vibrato t + phase0)), integrated
    wobble = np.cos(2 * math.pi * vibrato * t + phase0)
    phase = 2 * math.pi * f0 * (t - depth / (2 * math.pi * vibrato) * wobble)
    harmonics = max(1, min(20, int(0.45 * rate / (f0 * (1 + depth)))))
    alpha = rng.uniform(0.8, 2.0)
    x = sum(
        h**-alpha * np.sin(h * phase + rng.uniform(0, 2 * math.pi))
        for h in range(1, harmonics + 1)
    )
    return x * _envelope(n, rate, rng)


def _pulse(n: int, rate: float, f0: float, rng: np.random.Generator) -> np.ndarray:
    jitter = rng.uniform(0, 0.02)
    train = np.zeros(n)
    position = rng.uniform(0, rate / f0)
    while position < n:
        train[int(position)] = 1.0
        position += rate / f0 * (1 + jitter * rng.standard_normal())
    x = train
    for low, high in ((300, 900), (900, 2400), (2400, 3500)):
        centre = min(rng.uniform(low, high), 0.45 * rate)
        x = _resonator(x, centre, rng.uniform(60, 150), rate)
    syllables = rng.uniform(3, 6)
    t = np.arange(n) / rate
    modulation = 0.5 * (1 - np.cos(2 * math.pi * syllables * t + rng.uniform(0, 2 * math.pi)))
    return x * modulation


def _burst(n: int, rate: float, centre: float, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(n)
    t = np.arange(n) / rate
    for _ in range(int(rng.integers(2, 6))):
        onset = rng.uniform(0, 0.8 * n / rate)
        decay = rng.uniform(0.01, 0.15)
        shape = np.where(t >= onset, np.exp(-(t - onset) / decay), 0.0)
        x += rng.uniform(0.3, 1.0) * shape * rng.standard_normal(n)
    centre = min(centre, 0.45 * rate)
    return _resonator(x, centre, centre * rng.uniform(0.1, 0.5), rate)


_MAKERS = {"tone": _tone, "pulse": _pulse, "burst": _burst}


class Waveforms:
    r"""Single-source waveforms :math:`(1, T)` of the module's three families, one split.

    Arguments:
        split: ``train`` or ``test`` (the held-out frequency bands).
        samples: :math:`T`, each waveform's length.
        rate: Samples per second (the families' frequencies are in Hz).
        evaluation_size: How many waveforms :meth:`evaluation` draws (with a fixed seed).
    """

    num_classes = len(FAMILIES)

    def __init__(
        self,
        split: str = "train",
        samples: int = 4096,
        rate: int = 8000,
        evaluation_size: int = 240,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.samples = checks.integer(samples, "samples", low=64)
        self.rate = checks.integer(rate, "rate", low=8000)
        self.evaluation_size = checks.integer(evaluation_size, "evaluation_size", low=1)
        self.shape = (1, self.samples)

    def draw(self, label: int, rng: np.random.Generator) -> Drawn:
        """One waveform of family ``label`` from ``rng``, with its main frequency."""
        family = FAMILIES[label]
        options = bands(family, self.split)
        low, high = options[int(rng.integers(len(options)))]
        frequency = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        n = self.samples
        silence = int(rng.integers(0, n // 5 + 1))
        x = np.zeros(n)
        x[silence:] = _MAKERS[family](n - silence, float(self.rate), frequency, rng)
        peak = float(np.abs(x).max())
        if not math.isfinite(peak) or peak == 0:  # a guard: every family is non-zero
            raise FloatingPointError(f"a {family} waveform came out {peak}")
        return Drawn(x * rng.uniform(0.25, 0.9) / peak, label, frequency)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` waveforms :math:`(n, 1, T)` (float32) of random families, and their labels."""
        n = checks.integer(n, "n", low=1)
        labels = torch.randint(self.num_classes, (n,), generator=generator)
        seeds = torch.randint(2**62, (n,), generator=generator).tolist()
        signals = [
            self.draw(int(label), np.random.default_rng(seed)).signal
            for label, seed in zip(labels.tolist(), seeds, strict=True)
        ]
        return torch.from_numpy(np.stack(signals)[:, None]).float(), labels

    def evaluation(self) -> tuple[Tensor, Tensor]:
        """A fixed set of ``evaluation_size`` waveforms of the split (seed 0)."""
        return self.sample(self.evaluation_size, torch.Generator().manual_seed(0))

    def fit_set(self, generator: torch.Generator, n: int = 2000) -> Tensor:
        """The waveforms baselines are fitted on: ``n`` random draws."""
        return self.sample(n, generator)[0]
