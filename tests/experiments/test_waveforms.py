"""The synthetic waveforms of the audio prior: reproducible, in range, each family where its
main frequency says (tones and pulse trains peak at a harmonic of f0, bursts' spectral centroid
sits near fc), and the held-out split's frequencies never in the training bands."""

import itertools

import numpy as np
import pytest
import torch

from experiments.shared.waveforms import BANDS, FAMILIES, RANGES, Waveforms, bands


def test_draws_are_reproducible_and_in_range():
    data = Waveforms("train", samples=2048)
    x, labels = data.sample(30, torch.Generator().manual_seed(0))
    again, same = data.sample(30, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, again, rtol=0, atol=0)
    assert torch.equal(labels, same) and set(labels.tolist()) == {0, 1, 2}
    assert x.shape == (30, 1, 2048) and x.dtype == torch.float32
    peaks = x.abs().amax(-1)
    assert float(peaks.min()) >= 0.25 - 1e-6 and float(peaks.max()) <= 0.9 + 1e-6
    torch.testing.assert_close(data.evaluation()[0][:3], data.evaluation()[0][:3])


def test_the_held_out_bands_are_disjoint_from_training_and_cover_the_range():
    for family in FAMILIES:
        train, test = bands(family, "train"), bands(family, "test")
        edges = sorted(train + test)
        assert len(edges) == BANDS and edges[0][0] == pytest.approx(RANGES[family][0])
        assert edges[-1][1] == pytest.approx(RANGES[family][1])
        assert all(a[1] == pytest.approx(b[0]) for a, b in itertools.pairwise(edges))
        for split, own in (("train", train), ("test", test)):
            data = Waveforms(split, samples=1024)
            for seed in range(10):
                f = data.draw(FAMILIES.index(family), np.random.default_rng(seed)).frequency
                assert any(low <= f <= high for low, high in own), (family, split, f)


@pytest.mark.parametrize("split", ["train", "test"])
def test_each_family_sounds_at_its_frequency(split):
    """Measured over 20 draws each: the strongest spectral peak of tones and pulse trains lies
    within 2.2% of a multiple of f0 (vibrato and jitter smear it; asserted 5%); the bursts'
    spectral centroid is 0.7 to 1.5 times fc in most draws (asserted: the median within
    0.6 to 1.6)."""
    data = Waveforms(split)
    for label, family in enumerate(FAMILIES):
        ratios = []
        for seed in range(20):
            drawn = data.draw(label, np.random.default_rng(seed))
            x = drawn.signal
            assert drawn.label == label and np.isfinite(x).all()
            spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
            frequencies = np.fft.rfftfreq(len(x), 1 / data.rate)
            if family == "burst":
                ratios.append((frequencies * spectrum).sum() / spectrum.sum() / drawn.frequency)
            else:
                multiple = frequencies[np.argmax(spectrum)] / drawn.frequency
                ratios.append(abs(multiple - round(multiple)) / max(round(multiple), 1))
        if family == "burst":
            assert 0.6 < float(np.median(ratios)) < 1.6, ratios
        else:
            assert max(ratios) < 0.05, (family, ratios)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        Waveforms("validation")
    with pytest.raises(ValueError, match="samples must be"):
        Waveforms(samples=10)
    with pytest.raises(ValueError, match="rate must be"):
        Waveforms(rate=4000)
    with pytest.raises(ValueError, match="n must be"):
        Waveforms().sample(0, torch.Generator())
