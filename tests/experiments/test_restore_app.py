"""The restoration app on a tiny setting: scores, figures, the pseudo-inverse baseline, a
peer's loop side by side, and clear errors for bad configs."""

import json

from pathlib import Path

import pytest
import torch

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import priors

from experiments.inverse import restore
from experiments.shared import data, tasks

#: The digits prior at the app's former defaults, small; the catalogue's settings (those
#: tuned at 100 steps need not suit 4).
DIGITS = [
    "prior=digits", "images=2", "samples=2", "steps=4", "threads=1", "settings=catalogue",
    "tasks=[box,random,outpaint,blur,sr4]", "run=[dps,pigdm,ddrm,diffpir]", "baselines=[pinv]",
]  # fmt: skip


def _cfg(*overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.restore"):
        return compose("restore", overrides=[*DIGITS, *overrides])


def test_writes_metrics_table_and_figures(tmp_path):
    cfg = _cfg("tasks=[box,sr4]", "run=[pigdm,ddrm,deepinv_dps]")
    metrics = restore.run(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["tasks"] == metrics["tasks"] and saved["prior"] == "digits"
    for task in ("box", "sr4"):
        results = metrics["tasks"][task]
        assert set(results) == {"pinv", "pigdm", "ddrm", "deepinv_dps"}
        for name in ("pigdm", "ddrm", "deepinv_dps"):
            r = results[name]
            assert {"psnr", "ssim", "psnr_sample", "residual", "nfe", "vjp", "wall_s"} <= set(r)
            assert 0 < r["ssim"] <= 1 and r["psnr"] > 0 and r["nfe"] >= 3
        assert results["ddrm"]["vjp"] == 0 and results["pigdm"]["vjp"] == 4
        assert (tmp_path / f"restore_{task}.png").stat().st_size > 0
    assert "| sr4 | ddrm |" in (tmp_path / "table.md").read_text()


def test_a_method_that_cannot_take_the_operator_is_reported_not_applicable(tmp_path):
    metrics = restore.run(_cfg("tasks=[blur]", "run=[repaint,ddrm]"), tmp_path)
    assert "DDNMPlus" in metrics["tasks"]["blur"]["repaint"]["not applicable"]
    assert "psnr" in metrics["tasks"]["blur"]["ddrm"]
    assert "| blur | repaint | not applicable:" in (tmp_path / "table.md").read_text()


def test_scores_reward_the_truth():
    op = tasks.box_inpainting((1, 8, 8))
    truth = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = op(truth)
    exact = restore.scores(op, truth.repeat_interleave(3, 0), y, truth, 3)
    worse = restore.scores(op, op.pinv(y).repeat_interleave(3, 0), y, truth, 3)
    assert exact["psnr"] >= 80 and exact["residual"] < 1e-6 and exact["ssim"] > 0.99
    assert worse["psnr"] < 20 and worse["residual"] < 1e-6  # fits y, misses the box


@pytest.mark.slow  # over 4 s: the default suite stays under 10 minutes
def test_a_method_runs_with_its_tuned_settings_where_the_tuning_app_chose_any(tmp_path):
    """DDRM was tuned on digits SR x4 (tuned.yaml), the paper-form DPS was not: with
    ``settings=tuned`` (the default) DDRM runs with its tuned settings and says so, and DPS
    runs as the catalogue has it, exactly as with ``settings=catalogue``."""
    run = ("tasks=[sr4]", "run=[ddrm,dps]")
    for folder in ("tuned", "plain", "bad"):
        (tmp_path / folder).mkdir()
    tuned = restore.run(_cfg(*run, "settings=tuned"), tmp_path / "tuned")["tasks"]["sr4"]
    plain = restore.run(_cfg(*run, "settings=catalogue"), tmp_path / "plain")["tasks"]["sr4"]
    expected = OmegaConf.to_container(_cfg().tuned.ddrm.digits.sr4["0.05"])
    assert tuned["ddrm"]["tuned"] == expected and plain["ddrm"]["tuned"] is None
    assert tuned["ddrm"]["psnr_sample"] != plain["ddrm"]["psnr_sample"]
    assert tuned["dps"]["tuned"] is None
    assert tuned["dps"]["psnr_sample"] == plain["dps"]["psnr_sample"]
    with pytest.raises(ValueError, match="settings must be 'tuned' or 'catalogue'"):
        restore.run(_cfg("settings=best"), tmp_path / "bad")


def test_tasks_build_the_operators_they_name():
    shape = (1, 16, 16)
    assert tasks.box_inpainting(shape).mask.sum() == 256 - 64
    assert tasks.outpainting(shape).mask.sum() == 64
    assert tasks.super_resolution(shape).out_shape == (1, 4, 4)
    assert 0.2 < float(tasks.random_inpainting(shape).mask.mean()) < 0.4


def test_bad_configs_fail_early(tmp_path):
    with pytest.raises(ValueError, match="unknown methods, tasks or baselines"):
        restore.run(_cfg("run=[nope]"), tmp_path)
    with pytest.raises(ValueError, match="prior must be one of"):
        data.held_out("faces", 2)
    with pytest.raises(ValueError, match="images"):
        restore.run(_cfg("images=0"), tmp_path)
    with pytest.raises(ValueError, match="zeta"):  # a bad value stops the run
        restore.run(_cfg("tasks=[box]", "run=[dps]", "methods.dps.sampler.zeta=-1.0"), tmp_path)
    assert not (tmp_path / "metrics.json").exists()
    metrics = restore.run(  # DDRM needs an SVD: reported with the alternatives, run goes on
        _cfg(
            "tasks=[bicubic]",
            "run=[ddrm]",
            "+tasks_available.bicubic._target_=operators.BicubicSR",
            "+tasks_available.bicubic.factor=2",
        ),
        tmp_path,
    )
    reason = metrics["tasks"]["bicubic"]["ddrm"]["not applicable"]
    assert "SVDOperator" in reason and "PiGDM" in reason


def _png(tmp_path, name, image):
    from experiments.shared.images import write_png

    return write_png(tmp_path / name, image)


def test_a_users_image_is_restored_to_pngs_at_full_size(tmp_path):
    """image= replaces the held-out images: measured, restored, scored against itself, and
    each restoration written as a PNG of the image's size; a prior given by its file path
    loads like its name."""
    from experiments.shared.images import read_images

    digit = data.held_out("digits", 1)[0]
    path = _png(tmp_path, "mine.png", digit)
    weights = Path(priors.__file__).parent / "weights" / "digits.safetensors"
    out = tmp_path / "out"
    task = (f"image={path}", "tasks=[box]", "run=[pigdm]", "steps=5")
    by_path = restore.run(_cfg(*task, f"prior={weights}"), out)
    by_name = restore.run(_cfg(*task, "prior=digits"), tmp_path / "by_name")

    def scores(metrics):
        return {m: {k: v for k, v in r.items() if k != "wall_s"} for m, r in metrics.items()}

    assert scores(by_path["tasks"]["box"]) == scores(by_name["tasks"]["box"])
    assert set(by_path["tasks"]["box"]) == {"pinv", "pigdm"}
    for name in ("mine_box_pigdm.png", "mine_box_pigdm_std.png", "mine_box_pinv.png"):
        image = read_images(out / name)
        assert image.shape == (1, 1, 16, 16) and float(image.std()) > 0, name


def test_a_latent_prior_runs_the_latent_methods_and_counts_its_decoder(tmp_path):
    """A latent prior's file (a tiny autoencoder of 16x16 images and a denoiser of its
    latents): the latent methods restore images, with decoder passes and VJPs in the table;
    pixel methods are not applicable there, nor latent methods on a pixel prior."""
    from priors.conv_autoencoder import ConvAutoencoder

    torch.manual_seed(0)
    autoencoder = ConvAutoencoder([1, 16, 16], channels=[8, 16], latent_channels=2)
    config = {"network": {"in_channels": 2, "channels": [8, 16], "blocks": 1,
                          "attention": [False, False]},
              "schedule": {"name": "cosine"}, "shape": [2, 8, 8]}  # fmt: skip
    latent = priors.weights.build("denoiser", config)
    file = tmp_path / "tiny-latent.safetensors"
    both = {"autoencoder": priors.weights.describe(autoencoder)[1], "denoiser": config}
    priors.weights.save(priors.LatentPrior(autoencoder, latent), file, "latent", both)
    image = _png(tmp_path, "digit.png", data.held_out("digits", 1)[0])
    run = ["tasks=[box]", "run=[latent_dps,psld,ddrm,prior]", "steps=3", f"image={image}"]
    metrics = restore.run(_cfg(*run, f"prior={file}", "colour=null"), tmp_path / "out")
    box = metrics["tasks"]["box"]
    # per step: the likelihood's decoder pass and its VJP (PSLD's gluing decodes and encodes
    # once more and back-propagates through both); then one decoder pass for the images
    expected = {"latent_dps": (4, 3, 0, 0), "psld": (7, 6, 3, 3)}
    for name, counts in expected.items():
        r = box[name]
        found = (r["decoder"], r["decoder_vjp"], r["encoder"], r["encoder_vjp"])
        assert found == counts and r["nfe"] == 3 and r["vjp"] == 3, (name, r)
    assert "pixel-space method" in box["ddrm"]["not applicable"]
    assert box["prior"]["decoder"] == 1 and box["prior"]["decoder_vjp"] == 0
    table = (tmp_path / "out" / "table.md").read_text()
    assert "decoder + VJP" in table and "| box | psld |" in table
    (tmp_path / "pixel").mkdir()
    pixel = restore.run(_cfg("tasks=[box]", "run=[psld]", "steps=3"), tmp_path / "pixel")
    assert "on this pixel prior use" in pixel["tasks"]["box"]["psld"]["not applicable"]


def test_bad_images_and_priors_are_refused_before_any_work(tmp_path):
    rgb = _png(tmp_path, "colour.png", torch.zeros(3, 16, 16))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    cases = [
        (f"image={rgb}", r"3 channel\(s\), the prior takes 1"),  # grey prior, colour=null
        (f"image={tmp_path / 'broken.png'}", "not a readable image"),
        (f"image={tmp_path / 'missing.png'}", "neither a file nor a folder"),
        (f"prior={tmp_path / 'nowhere.safetensors'}", "neither a shipped name"),
    ]
    for override, match in cases:
        out = tmp_path / "out"
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            restore.run(_cfg(override, "tasks=[box]", "run=[pigdm]", "colour=null"), out)
        assert not out.exists() or not list(out.iterdir())


def test_classical_baselines_are_scored_beside_the_methods(tmp_path):
    cfg = _cfg("tasks=[random]", "run=[ddrm]", "baselines=[interpolate,tv]")
    tuned = {"tv": {"random": {"0.01": {"lam": 0.01}, "0.1": {"lam": 0.1}}}}
    OmegaConf.update(cfg, "baseline_settings", tuned, merge=False)
    results = restore.run(cfg, tmp_path)["tasks"]["random"]
    assert set(results) == {"pinv", "interpolate", "tv", "ddrm"}
    assert results["tv"]["settings"] == {"lam": 0.1}  # the nearest tuned sigma_y to 0.05
    assert results["interpolate"]["psnr"] > results["pinv"]["psnr"]


def test_a_baseline_without_tuned_settings_is_refused_before_any_work(tmp_path):
    cfg = _cfg("tasks=[box]", "run=[ddrm]", "baselines=[tv]")
    OmegaConf.update(
        cfg, "baseline_settings", {"tv": {"sr4": {"0.01": {"lam": 0.01}}}}, merge=False
    )
    with pytest.raises(ValueError, match="baseline 'tv' has no tuned settings for task 'box'"):
        restore.run(cfg, tmp_path)
    assert not list(tmp_path.iterdir())


def test_coverage_is_the_share_of_the_truths_pixels_in_the_samples_intervals():
    """Samples drawn around the truth with the spread of their own errors cover about
    (n - 1) level / (n + 1) of its pixels (16 samples: 0.44 and 0.79; measured 0.45, 0.81);
    samples all equal to a wrong image cover nothing; one sample per image has no coverage,
    and the table shows the column only when some method has it."""
    op = tasks.box_inpainting((1, 32, 32))
    g = torch.Generator().manual_seed(1)
    truth = torch.rand(4, 1, 32, 32, generator=g) * 2 - 1
    y = op(truth)
    centre = truth + 0.1 * torch.randn(4, 1, 32, 32, generator=g)
    draws = centre.repeat_interleave(16, 0) + 0.1 * torch.randn(64, 1, 32, 32, generator=g)
    calibrated = restore.scores(op, draws, y, truth, 16)
    assert calibrated["cover50"] == pytest.approx(0.44, abs=0.03)
    assert calibrated["cover90"] == pytest.approx(0.79, abs=0.03)
    wrong = restore.scores(op, (truth + 0.5).repeat_interleave(16, 0), y, truth, 16)
    assert wrong["cover50"] == wrong["cover90"] == 0.0
    single = restore.scores(op, truth, y, truth, 1)
    assert "cover50" not in single
    cost = {"nfe": 0, "vjp": 0, "wall_s": 0.0}
    table = restore.markdown({"box": {"ours": calibrated | cost, "pinv": single | cost}})
    assert "cover 50% / 90% |" in table and "| box | pinv |" in table
    assert "cover" not in restore.markdown({"box": {"pinv": single | cost}})


def test_a_nonlinear_task_runs_the_methods_that_take_it(tmp_path):
    """Nonlinear blur: DCPS and DAPS (its catalogue grid ends at the authors' noise level
    0.1, so its Langevin steps are stable) restore it; DDRM, which needs an SVD, is reported
    not applicable; a karras floor is refused on another grid kind."""
    metrics = restore.run(
        _cfg("tasks=[nonlinear_blur]", "run=[dcps,daps,ddrm]", "images=1", "steps=3"), tmp_path
    )
    results = metrics["tasks"]["nonlinear_blur"]
    assert "psnr" in results["dcps"] and "psnr" in results["daps"]
    assert "SVDOperator" in results["ddrm"]["not applicable"]
    from experiments.shared.build import build_method

    node = OmegaConf.create({"sampler": {"_target_": "guided.DDPM"}, "grid_sigma_min": 0.1})
    with pytest.raises(ValueError, match="grid_sigma_min"):
        build_method(node, priors.load("digits"))
    node.grid = "karras"
    method = build_method(node, priors.load("digits"))
    alpha, sigma = method.denoiser.schedule(method.times(10)[-2])  # the last non-zero time
    assert float(sigma / alpha) == pytest.approx(0.1, rel=1e-3)
