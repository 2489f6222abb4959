"""priors.from_path: a prior from a shipped name, one of our weight files, a saved diffusers
pipeline or a guided-diffusion checkpoint, and a clear error for anything else."""

import json

import pytest
import torch

import priors

from priors.weights import save
from tests.conftest import save_tiny_ddpm_pipeline


def test_a_shipped_name_loads_the_shipped_prior():
    prior = priors.from_path("digits")
    assert isinstance(prior, priors.UNetDenoiser) and prior.shape == (1, 16, 16)


def test_our_weight_file_loads_and_other_kinds_are_refused(tmp_path):
    net = priors.MLPDenoiser(priors.MLP(3, width=8, blocks=1), priors.CosineSchedule())
    path = save(net, tmp_path / "mlp.safetensors")
    loaded = priors.from_path(path)
    x_t = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded(x_t, 0.5), net(x_t, 0.5))
    critic = save(priors.Critic(2, 3, width=8, depth=1), tmp_path / "critic.safetensors")
    with pytest.raises(ValueError, match="holds a critic, not a denoiser"):
        priors.from_path(str(critic))


def test_a_diffusers_folder_loads(tmp_path):
    save_tiny_ddpm_pipeline(tmp_path / "pipe", 8)
    prior = priors.from_path(tmp_path / "pipe")
    assert prior.shape == (1, 8, 8) and prior.schedule.steps == 50


def test_an_adm_checkpoint_takes_its_size_from_the_file_beside_it(tmp_path):
    from deepinv.models import DiffUNet

    torch.manual_seed(0)
    path = tmp_path / "adm.pt"
    torch.save(DiffUNet(in_channels=3, out_channels=3, pretrained=None).state_dict(), path)
    assert priors.from_path(path).shape == (3, 256, 256)  # the FFHQ configuration
    (tmp_path / "adm.json").write_text(json.dumps({"image_size": 64}))
    assert priors.from_path(path).shape == (3, 64, 64)
    (tmp_path / "adm.json").write_text(json.dumps({"image_size": 64, "channels": 3}))
    with pytest.raises(ValueError, match="only 'large_model'"):
        priors.from_path(path)
    (tmp_path / "adm.json").write_text(json.dumps({"image_size": "64"}))
    with pytest.raises(TypeError, match="adm.json: image_size"):
        priors.from_path(path)


def test_an_adm_checkpoints_configuration_is_inferred_from_its_shapes(tmp_path):
    """No file beside it: the FFHQ or large configuration from the first convolution's
    width; a width of neither, or no ADM keys, is refused before a network is built; a bad
    override in the file beside it is refused."""
    from deepinv.models import DiffUNet

    from priors.adapters import adm_is_large

    torch.manual_seed(0)
    state = DiffUNet(in_channels=3, out_channels=3, pretrained=None).state_dict()
    assert adm_is_large(state, tmp_path) is False
    assert adm_is_large({"input_blocks.0.0.weight": torch.zeros(256, 3, 3, 3)}, tmp_path)
    with pytest.raises(ValueError, match="maps 3 channels to 64"):
        adm_is_large({"input_blocks.0.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path)
    with pytest.raises(ValueError, match="maps 1 channels to 128"):
        adm_is_large({"input_blocks.0.0.weight": torch.zeros(128, 1, 3, 3)}, tmp_path)
    path = tmp_path / "adm.pt"
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="not a guided-diffusion"):
        priors.from_path(path)
    torch.save(state, path)
    assert priors.from_path(path).shape == (3, 256, 256)  # inferred: FFHQ
    (tmp_path / "adm.json").write_text(json.dumps({"large_model": "yes"}))
    with pytest.raises(TypeError, match="adm.json: large_model"):
        priors.from_path(path)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda d: d / "nothing-here", FileNotFoundError, "neither a shipped name"),
        (lambda d: d, ValueError, "without unet/ and scheduler/"),
        (lambda d: _write(d / "notes.txt", b"hello"), ValueError, "unknown kind of file"),
        (lambda d: _write(d / "bad.safetensors", b"garbage"), ValueError, "not a readable"),
        (lambda d: _write(d / "bad.pt", b"garbage"), ValueError, "not a readable checkpoint"),
    ],
)
def test_anything_else_is_refused_naming_what_is_accepted(tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        priors.from_path(make(tmp_path))
    with pytest.raises(TypeError, match="a name or a path"):
        priors.from_path(3)


def _write(path, data):
    path.write_bytes(data)
    return path
