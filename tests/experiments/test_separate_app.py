"""The separation app on tiny settings (an untrained one-dimensional U-Net saved by the test),
its scenes and its IVA baseline."""

import csv
import math

import numpy as np
import pytest
import torch

from hydra import compose, initialize_config_module

from experiments.inverse import separate
from experiments.shared.metrics import si_sdr
from experiments.shared.scenes import Scenes
from experiments.shared.waveforms import Waveforms
from priors.weights import build, save


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    torch.manual_seed(0)
    network = {
        "in_channels": 1, "channels": [8, 8, 8, 8, 8], "blocks": 1, "attention": [False] * 5,
        "groups": 4, "dims": 1,
    }  # fmt: skip
    config = {"network": network, "schedule": {"name": "cosine"}, "shape": [1, 256]}
    path = tmp_path_factory.mktemp("prior") / "tiny.safetensors"
    save(build("denoiser", config), path, "denoiser", config)
    return str(path)


def _cfg(prior, *overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.separate"):
        return compose(
            "separate",
            overrides=[f"prior={prior}", "scenes=1", "samples=2048", "steps=3", *overrides],
        )


@pytest.mark.filterwarnings("ignore::guided.DivergenceWarning")  # an untrained prior
def test_separate_app_writes_scores_and_figure(tmp_path, tiny_prior):
    metrics = separate.run(_cfg(tiny_prior), tmp_path)
    summary = metrics["summary"]
    assert set(summary) == set(separate.METHODS)
    assert summary["mixture"]["si_sdr_i"] == pytest.approx(0.0, abs=1e-9)
    assert summary["oracle"]["gap_closed"] == pytest.approx(1.0)
    for method in separate.SAMPLED:  # one evaluation per source and step, one VJP per step
        assert summary[method]["nfe"] == 6 and summary[method]["vjp"] == 3
    assert summary["iva"]["nfe"] == 0
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(separate.METHODS)
    assert (tmp_path / "separation.png").stat().st_size > 0
    assert "gap closed" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("methods=[nope]", "methods must be some of"),
        ("kind=nope", "kind must be one of"),
        ("settings.arraydps.xi=0", "settings.arraydps.xi"),
        ("settings.em.xi=inf", "settings.em.xi"),
        ("samples=2050", "multiple of 16"),
        ("steps=0", "steps"),
        ("figure_scene=1", "figure_scene"),
        ("iva.n_fft=4096", "iva.n_fft"),
        ("first=-1", "first"),
        ("settings.oracle.start=0", "settings.oracle.start"),
        ("settings.em.start=nan", "settings.em.start"),
        ("settings.arraydps.start=1e-5", "above sampler.sigma_min"),
        ("sampler.rho=-1", "sampler.rho"),
    ],
)
def test_separate_app_bad_configs(tmp_path, tiny_prior, override, match):
    with pytest.raises(ValueError, match=match):
        separate.run(_cfg(tiny_prior, override), tmp_path)
    assert not list(tmp_path.iterdir())


def test_separate_app_refuses_an_image_prior(tmp_path):
    with pytest.raises(ValueError, match=r"waveform prior \(1, T\)"):
        separate.run(_cfg("digits"), tmp_path)
    assert not list(tmp_path.iterdir())


def test_scenes_are_reproducible_and_of_their_kind():
    mixed, same = Scenes("mixed", samples=2048), Scenes("same", samples=2048)
    a, b = mixed[3], Scenes("mixed", samples=2048)[3]
    np.testing.assert_array_equal(a.mixture, b.mixture)
    assert not np.array_equal(a.mixture, mixed[4].mixture)
    assert len(set(a.families)) == 2 and len(set(same[3].families)) == 1
    assert a.mixture.shape == (3, 2048) and a.images.shape == (2, 3, 2048)
    # each source's reference image has its dry waveform's RMS; the noise is 30 dB down
    for j in range(2):
        rms = math.sqrt(np.mean(a.images[j, 0] ** 2))
        assert rms == pytest.approx(math.sqrt(np.mean(a.dry[j] ** 2)), rel=1e-9)
    noise = a.mixture - a.images.sum(0)
    power = np.mean(a.images.sum(0)[0] ** 2)
    assert 10 * math.log10(power / np.mean(noise[0] ** 2)) == pytest.approx(30, abs=0.5)
    assert 0.15 <= a.rt60 <= 0.35


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "nope"}, "kind"),
        ({"sources": 4}, "sources"),
        ({"microphones": 1}, "microphones"),
        ({"rt60": (0.4, 0.2)}, "rt60"),
        ({"rt60": (0.01, 0.2)}, "rt60"),
        ({"snr": math.inf}, "snr"),
    ],
)
def test_scenes_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Scenes(**kwargs)


def test_iva_separates_an_instantaneous_mixture():
    """The baseline's wiring (layout, projection back onto microphone 0): two held-out
    sources mixed by a random 3 x 2 matrix with a little noise are separated to over 15 dB
    SI-SDR each (measured 22.1 and 20.8 dB)."""
    waveforms, rng = Waveforms("test", samples=16384), np.random.default_rng(0)
    s = np.stack([waveforms.draw(0, rng).signal, waveforms.draw(1, rng).signal])
    mixing = rng.normal(size=(3, 2))
    y = torch.from_numpy(mixing @ s + 1e-3 * rng.normal(size=(3, 16384)))
    targets = torch.from_numpy(mixing[0][:, None] * s)
    scores, _ = si_sdr(separate.iva(y, 2, 256, 50)[None], targets[None])
    assert bool((scores > 15).all())
