"""Convolutive transfer functions: the default filters pass every source to every microphone
unchanged; forward convolutive prediction recovers known room filters from clean sources
(jointly to the filters' own frequency response; per source, as ArrayDPS, up to the leakage
between sources); bad input is refused. (Adjointness, the pseudo-inverse, dtypes and fuzzing
run on it through operators.examples.)"""

import pytest
import torch

import operators

from operators.transfer import istft, stft

F64 = torch.float64


def _rooms(k, m, length=48, seed=0):
    """Room-like FIR filters (k, m, length): a delayed direct path of gain 1 / (1 + m) and a
    short decaying random tail."""
    g = torch.Generator().manual_seed(seed)
    h = torch.zeros(k, m, length, dtype=F64)
    for i in range(k):
        for j in range(m):
            d = 3 * i + 5 * j
            h[i, j, d] = 1.0 / (1 + j)
            tail = 0.2 * torch.randn(length - d - 1, generator=g, dtype=F64)
            h[i, j, d + 1 :] = tail * torch.exp(-torch.arange(length - d - 1) / 4.0)
    return h


def _mix(sources, h):
    """Each microphone's sum of the sources convolved (causally) with their filters."""
    k, m, length = h.shape
    padded = torch.nn.functional.pad(sources, (length - 1, 0))  # (B, K, T + length - 1)
    return torch.stack(
        [
            sum(
                torch.nn.functional.conv1d(padded[:, i : i + 1], h[i, j].flip(-1)[None, None])[
                    :, 0
                ]
                for i in range(k)
            )
            for j in range(m)
        ],
        dim=1,
    )


def test_the_transform_inverts_and_the_default_filters_are_the_reference():
    x = torch.randn(2, 2, 1000, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(istft(stft(x, 128, 32), 128, 32, 1000), x, rtol=0, atol=1e-12)
    op = operators.ConvolutiveTransfer(2, 3, 1000, n_fft=128, hop=32, taps=3)
    expected = x.sum(1, keepdim=True).expand(2, 3, 1000)
    torch.testing.assert_close(op(x), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(op.images(x).sum(1), op(x), rtol=0, atol=1e-12)


def test_fcp_recovers_known_room_filters_from_clean_sources():
    """Two white sources, three microphones, room filters of 48 samples (window 256): the joint
    fit's first tap is the filters' frequency response within 3.1% (relative L2; measured
    3.0%) and its mixture matches the true one at 31 dB SNR (36 dB with 2 taps). Fitted per
    source, as ArrayDPS does at each step, it is far worse on these short noise sources (8.3
    dB: each source's regression absorbs part of the other's image, 65 frames of
    cross-correlation), and exact like the joint fit for one source."""
    h = _rooms(2, 3)
    x = torch.randn(1, 2, 4096, generator=torch.Generator().manual_seed(1), dtype=F64)
    y = _mix(x, h)
    response = torch.fft.rfft(h, n=256)  # (K, M, F): the filters at the STFT's frequencies

    def snr(op):
        with torch.no_grad():
            return float(10 * torch.log10(y.square().sum() / (y - op(x)).square().sum()))

    fitted = {}
    for joint, taps in ((True, 1), (True, 2), (False, 1)):
        op = operators.ConvolutiveTransfer(2, 3, 4096, n_fft=256, hop=64, taps=taps)
        op.fit(x, y, joint=joint, ridge=1e-6)
        fitted[joint, taps] = snr(op)
        if (joint, taps) == (True, 1):
            first = op.transfer()[..., 0].detach()
            error = (
                first - response
            ).abs().square().sum().sqrt() / response.abs().square().sum().sqrt()
            assert float(error) < 0.031
    assert fitted[True, 1] > 30 and fitted[True, 2] > 35, fitted
    assert fitted[False, 1] < fitted[True, 1] - 15, fitted  # the leakage, measured
    single = [operators.ConvolutiveTransfer(1, 3, 4096, n_fft=256, hop=64, taps=2) for _ in "ab"]
    y1 = _mix(x[:, :1], h[:1])
    single[0].fit(x[:, :1], y1, joint=True)
    single[1].fit(x[:, :1], y1, joint=False)
    torch.testing.assert_close(single[0].filters, single[1].filters, rtol=1e-10, atol=1e-12)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="n_fft must be even"):
        operators.ConvolutiveTransfer(2, 3, 1000, n_fft=127)
    with pytest.raises(ValueError, match="n_fft must be an integer in"):
        operators.ConvolutiveTransfer(2, 3, 100, n_fft=256)
    with pytest.raises(ValueError, match="hop must be an integer in"):
        operators.ConvolutiveTransfer(2, 3, 1000, n_fft=128, hop=100)
    with pytest.raises(ValueError, match=r"filters must have shape \(2, 3, 65, 1\)"):
        operators.ConvolutiveTransfer(
            2, 3, 1000, n_fft=128, hop=32, taps=1, filters=torch.ones(2, 3, 65)
        )
    with pytest.raises(ValueError, match="filters"):
        bad = torch.zeros(2, 3, 65, 1, 2, dtype=F64)
        bad[0, 0, 0, 0, 0] = float("inf")
        operators.ConvolutiveTransfer(2, 3, 1000, n_fft=128, hop=32, taps=1, filters=bad)
    op = operators.ConvolutiveTransfer(2, 3, 1000, n_fft=128, hop=32)
    x = torch.zeros(2, 2, 1000, dtype=F64)
    with pytest.raises(ValueError, match="as many rows"):
        op.fit(x, torch.zeros(1, 3, 1000, dtype=F64))
    with pytest.raises(ValueError, match=r"y must have shape \(B, 3, 1000\)"):
        op.fit(x, torch.zeros(2, 2, 1000, dtype=F64))
    with pytest.raises(ValueError, match="ridge"):
        op.fit(x, torch.zeros(2, 3, 1000, dtype=F64), ridge=-1.0)
    with pytest.raises(TypeError, match="joint must be True or False"):
        op.fit(x, torch.zeros(2, 3, 1000, dtype=F64), joint=1)
