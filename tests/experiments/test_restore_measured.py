"""The restore app on a degraded file the user already has (no ground truth): a
low-resolution PNG to a 4x PNG, a photo plus a mask PNG to its inpainting, a blurred photo
plus its kernel; with the shipped natural prior, an ADM checkpoint and a diffusers folder;
and every bad input refused before anything is written."""

import json

import numpy as np
import pytest
import torch

from hydra import compose, initialize_config_module

from experiments.inverse import restore
from experiments.shared.images import read_images, write_png
from experiments.shared.photographs import Photographs
from tests.conftest import save_tiny_ddpm_pipeline

FAST = ["samples=2", "steps=3", "threads=1", "run=[ddrm]", "baselines=[interpolate]"]


def _cfg(*overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.restore"):
        return compose("restore", overrides=["prior=natural", *FAST, *overrides])


def _photo(side=64):
    """A training-photograph crop in [-1, 1] (what a user might hold)."""
    return Photographs("train", crop=side).evaluation()[0][200].double()


def test_a_low_resolution_png_becomes_a_four_times_larger_png(tmp_path):
    low = torch.nn.functional.avg_pool2d(_photo()[None], 4)[0]
    path = write_png(tmp_path / "small.png", low)
    out = tmp_path / "out"
    metrics = restore.run(_cfg(f"measurement={path}", "scale=4", "sigma_y=0.01", "steps=20"), out)
    assert metrics["task"] == "sr4" and not metrics["sigma_y_estimated"]
    assert metrics["sigma_y"] == 0.01
    for name in ("small_sr4_ddrm.png", "small_sr4_ddrm_std.png", "small_sr4_interpolate.png"):
        assert read_images(out / name).shape == (1, 1, 64, 64), name
    result = metrics["tasks"]["sr4"]["ddrm"]
    assert "psnr" not in result and result["residual"] < 0.03  # no truth: the fit only
    assert json.loads((out / "metrics.json").read_text())["task"] == "sr4"
    assert (out / "restore_sr4.png").stat().st_size > 0


def test_a_photo_and_a_mask_are_inpainted_with_an_estimated_noise_level(tmp_path):
    photo = _photo()
    g = torch.Generator().manual_seed(0)
    noisy = (photo + 0.04 * torch.randn(photo.shape, generator=g, dtype=photo.dtype)).clamp(-1, 1)
    mask = torch.ones(1, 64, 64, dtype=torch.float64)
    mask[:, 20:40, 24:44] = -1  # black: missing
    image, mask_file = (
        write_png(tmp_path / "photo.png", noisy),
        write_png(tmp_path / "m.png", mask),
    )
    metrics = restore.run(_cfg(f"measurement={image}", f"mask={mask_file}"), tmp_path / "out")
    assert metrics["task"] == "inpaint" and metrics["sigma_y_estimated"]
    assert 0.02 < metrics["sigma_y"] < 0.08  # the wavelet estimate of 0.04 (and 8-bit rounding)
    restored = read_images(tmp_path / "out" / "photo_inpaint_ddrm.png")
    assert restored.shape == (1, 1, 64, 64)


def test_a_blurred_photo_is_deblurred_with_its_kernel(tmp_path):
    kernel = np.outer(np.hanning(7)[1:-1] + 0, np.hanning(7)[1:-1])
    np.save(tmp_path / "k.npy", kernel)  # not normalised: the app normalises it
    path = write_png(tmp_path / "blurred.png", _photo())
    metrics = restore.run(
        _cfg(f"measurement={path}", f"kernel={tmp_path / 'k.npy'}", "sigma_y=0.02"),
        tmp_path / "out",
    )
    assert metrics["task"] == "deblur" and "ddrm" in metrics["tasks"]["deblur"]
    assert (tmp_path / "out" / "blurred_deblur_pinv.png").exists()


def test_a_colour_photo_is_restored_with_the_grey_prior(tmp_path):
    """colour=luma_chroma (the default) and per_channel run the grey prior on RGB files."""
    from skimage import data

    rgb = torch.from_numpy(data.chelsea()[100:164, 200:264]).permute(2, 0, 1).double() / 127.5 - 1
    low = write_png(tmp_path / "cat.png", torch.nn.functional.avg_pool2d(rgb[None], 4)[0])
    for colour in ("luma_chroma", "per_channel"):
        out = tmp_path / colour
        restore.run(_cfg(f"measurement={low}", "scale=4", "sigma_y=0.01", f"colour={colour}"), out)
        assert read_images(out / "cat_sr4_ddrm.png").shape == (1, 3, 64, 64)


@pytest.mark.slow  # over 4 s: the default suite stays under 10 minutes
def test_checkpoints_of_other_libraries_restore_a_measurement(tmp_path):
    """An ADM checkpoint (config beside it) and a saved diffusers folder, tiny and random."""
    from deepinv.models import DiffUNet

    save_tiny_ddpm_pipeline(tmp_path / "pipe", 16)
    torch.manual_seed(0)
    adm = tmp_path / "adm.pt"
    torch.save(DiffUNet(in_channels=3, out_channels=3, pretrained=None).state_dict(), adm)
    (tmp_path / "adm.json").write_text(json.dumps({"image_size": 32}))
    grey = write_png(tmp_path / "grey.png", torch.zeros(1, 4, 4))
    colour = write_png(tmp_path / "colour.png", torch.zeros(3, 8, 8))
    for prior, path, side in ((tmp_path / "pipe", grey, 16), (adm, colour, 32)):
        out = tmp_path / f"out-{side}"
        restore.run(_cfg(f"prior={prior}", f"measurement={path}", "scale=4", "sigma_y=0.05",
                         "steps=2", "samples=1"), out)  # fmt: skip
        name = f"{path.stem}_sr4_ddrm.png"
        assert read_images(out / name).shape[-2:] == (side, side)


def test_bad_measurements_are_refused_before_anything_is_written(tmp_path):
    photo = write_png(tmp_path / "photo.png", _photo())
    colour = write_png(tmp_path / "colour.png", torch.zeros(3, 64, 64))
    small_mask = write_png(tmp_path / "small.png", torch.ones(1, 32, 32))
    black = write_png(tmp_path / "black.png", -torch.ones(1, 64, 64))
    np.save(tmp_path / "negative.npy", -np.ones((3, 3)))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    cases = [
        ([f"measurement={photo}"], "exactly one of scale"),
        ([f"measurement={photo}", "scale=4", f"mask={small_mask}"], "exactly one of scale"),
        ([f"measurement={photo}", f"mask={small_mask}"], "mask .* is 32x32, the measurement"),
        ([f"measurement={photo}", f"mask={black}"], "observes no pixel"),
        ([f"measurement={colour}", "scale=2", "colour=null"], r"3 channel\(s\), the prior"),
        ([f"measurement={colour}", "scale=2", "colour=lab"], "colour must be one of"),
        ([f"measurement={photo}", f"kernel={tmp_path / 'negative.npy'}"], "non-negative"),
        ([f"measurement={tmp_path / 'broken.png'}", "scale=2"], "not a readable image"),
        ([f"measurement={photo}", "scale=1"], "scale"),
        ([f"measurement={photo}", "scale=2", "sr_model=lanczos"], "sr_model must be one of"),
        ([f"measurement={photo}", "scale=2", f"image={photo}"], "not both"),
        ([f"measurement={photo}", "scale=2", "sigma_y=-0.1"], "sigma_y"),
    ]
    for overrides, match in cases:
        out = tmp_path / "out"
        with pytest.raises(ValueError, match=match):
            restore.run(_cfg(*overrides), out)
        assert not out.exists() or not list(out.iterdir()), overrides
