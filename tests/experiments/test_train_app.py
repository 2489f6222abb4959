"""The training app: a killed run resumes to the same weights; exports load in one call."""

from pathlib import Path

import pytest
import torch

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import priors

from experiments.training.train import check_milestones, decay, draw_times, ema_decay, train

TINY = [
    "network.channels=[8,16]",
    "network.attention=[false,true]",
    "network.blocks=1",
    "network.heads=2",
    "network.context_dim=8",
    "network.class_tokens=2",
    "batch_size=8",
    "warmup=2",
    "checkpoint_every=3",
    "progress=false",
    "device=cpu",
]


def _cfg(*overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.train"):
        return compose("train", overrides=["prior=digits", *TINY, *overrides])


def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path):
    straight = tmp_path / "straight"
    straight.mkdir()
    metrics = train(_cfg("steps=6"), straight)
    assert metrics["steps"] == 6
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    train(_cfg("steps=3"), resumed)  # "killed" after 3 steps (its checkpoint is at 3)
    (resumed / "digits.safetensors").unlink()
    train(_cfg("steps=6"), resumed)  # the same command again continues from step 3
    a = priors.weights.read(straight / "digits.safetensors")
    b = priors.weights.read(resumed / "digits.safetensors")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    card = (straight / "digits.md").read_text()
    assert "steps=6" in card and "mse_wiener" in card
    assert not list(straight.glob("*.tmp"))


def test_bad_training_values_raise(tmp_path: Path):
    with pytest.raises(ValueError, match="ema"):
        train(_cfg("ema=1.5", "steps=1"), tmp_path)
    with pytest.raises(ValueError, match="positive"):
        train(_cfg("steps=0"), tmp_path)


@pytest.mark.slow  # 9 s for digits: the default suite stays under 10 minutes
@pytest.mark.parametrize("name", ["digits", "textures"])
def test_shipped_priors_beat_the_wiener_filter_on_held_out_data(name):
    from experiments.shared.data import Digits, Textures
    from experiments.training.train import evaluate_denoiser

    data = Digits if name == "digits" else Textures
    result = evaluate_denoiser(priors.load(name), data("train"), data("test"), seed=1)
    for sigma, row in result["denoising_mse"].items():
        assert row["mse_prior"] < row["mse_wiener"], (sigma, row)


def test_log_normal_training_times_sit_at_the_chosen_noise_levels():
    schedule = priors.CosineSchedule()
    spec = OmegaConf.create({"mean": -1.2, "std": 1.2, "uniform_share": 0.0})
    t = draw_times(schedule, 20000, spec, torch.Generator().manual_seed(0))
    alpha, sigma = schedule(t)
    log_ratio = torch.log(sigma / alpha)
    assert abs(float(log_ratio.median()) + 1.2) < 0.05
    assert abs(float(log_ratio.std()) - 1.2) < 0.05  # the schedule's ends clip little
    mixed = OmegaConf.create({"mean": -1.2, "std": 1.2, "uniform_share": 1.0})
    uniform = draw_times(schedule, 20000, mixed, torch.Generator().manual_seed(0))
    assert abs(float(uniform.mean()) - 0.5) < 0.01
    assert draw_times(schedule, 4, None, torch.Generator()) is None
    with pytest.raises(ValueError, match="uniform_share in"):
        draw_times(schedule, 4, OmegaConf.create({"mean": 0, "std": 1, "uniform_share": 2}), None)


#: The natural prior's configurations (and its flow twin's), tiny: 32x32 crops, two levels.
PHOTOGRAPHS = [
    "network.channels=[8,16]", "network.attention=[false,false]", "data.crop=32",
    "shape=[1,32,32]", "batch_size=4", "warmup=2", "progress=false", "device=cpu",
]  # fmt: skip


def _photographs(name, *overrides):
    with initialize_config_module(version_base=None, config_module="experiments.configs.train"):
        return compose("train", overrides=[f"prior={name}", *PHOTOGRAPHS, *overrides])


def test_the_natural_prior_trains_without_normalisation(tmp_path: Path):
    cfg = _photographs("natural", "steps=3")
    metrics = train(cfg, tmp_path)
    assert metrics["steps"] == 3
    prior = priors.from_path(str(tmp_path / "natural.safetensors"))
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in prior.modules())
    card = (tmp_path / "natural.md").read_text()
    assert "| astronaut | held out | scikit-image |" in card and "| camera | train |" in card


@pytest.mark.parametrize("name", ["natural", "natural-flow"])
def test_the_loss_regresses_v_or_the_flow_velocity(name):
    from experiments.shared.build import build
    from experiments.training.train import denoiser_loss, module_config
    from priors.noising import diffuse

    with initialize_config_module(version_base=None, config_module="experiments.configs.train"):
        cfg = compose(
            "train",
            overrides=[
                f"prior={name}",
                "network.channels=[8,16]",
                "network.attention=[false,false]",
            ],
        )
    model = priors.weights.build("denoiser", module_config(cfg))  # untrained: its output is 0
    x = build(cfg.data, split="train").sample(4, torch.Generator().manual_seed(1))[0]
    loss = denoiser_loss(model, x, None, 0.0, torch.Generator().manual_seed(2), cfg.time_sampling)
    g = torch.Generator().manual_seed(2)  # the same draws, the target written out
    n = diffuse(model.schedule, x, g, draw_times(model.schedule, 4, cfg.time_sampling, g))
    if name == "natural-flow":
        assert model.prediction == "flow" and isinstance(model.schedule, priors.RectifiedSchedule)
        target = n.eps - x  # flow matching on x_t = (1 - t) x + t eps
    else:
        assert model.prediction == "v" and isinstance(model.schedule, priors.CosineSchedule)
        target = n.alpha_t * n.eps - n.sigma_t * x
    torch.testing.assert_close(loss, target.pow(2).mean())


@pytest.mark.slow  # over 4 s: the default suite stays under 10 minutes
def test_the_flow_twin_trains_and_loads_as_a_flow_prior(tmp_path: Path):
    cfg = _photographs("natural-flow", "steps=2")
    train(cfg, tmp_path)
    prior = priors.from_path(str(tmp_path / "natural-flow.safetensors"))
    assert prior.prediction == "flow" and isinstance(prior.schedule, priors.RectifiedSchedule)
    assert "prior=natural-flow" in (tmp_path / "natural-flow.md").read_text()


def test_a_prior_config_overrides_the_app_defaults_and_the_card_records_the_overrides():
    with initialize_config_module(version_base=None, config_module="experiments.configs.train"):
        weak = compose("train", overrides=["prior=digits-weak"])
        flow = compose("train", overrides=["prior=natural-flow", "warmup=7"])
    assert weak.steps == 2000  # the prior's, over the app's defaults
    assert flow.warmup == 7 and flow.prediction == "flow"  # the command line's, over both
    from experiments.training.train import command

    line = command(flow, 12, ["prior=natural-flow", "warmup=7", "install=true", "steps=9"])
    assert line == (
        "python -m experiments.training.train prior=natural-flow warmup=7 steps=12 install=true"
    )


def test_an_autoencoder_then_a_latent_prior_on_its_latents(tmp_path: Path):
    common = [
        "data.crop=32",
        "batch_size=4",
        "steps=2",
        "warmup=2",
        "progress=false",
        "device=cpu",
    ]
    with initialize_config_module(version_base=None, config_module="experiments.configs.train"):
        first = compose(
            "train",
            overrides=["prior=natural-autoencoder", "network.channels=[8,16]", "shape=[1,32,32]",
                       *common],
        )  # fmt: skip
        metrics = train(first, tmp_path / "ae")
        path = tmp_path / "ae" / "natural-autoencoder.safetensors"
        second = compose(
            "train",
            overrides=["prior=natural-latent", f"autoencoder={path}", "network.channels=[8,16]",
                       "network.attention=[false,false]", "shape=[3,16,16]", *common],
        )  # fmt: skip
        wrong = compose("train", overrides=["prior=natural-latent", f"autoencoder={path}"])
    ae = priors.weights.read(path, kind="autoencoder")
    assert ae.latent_shape == (3, 16, 16) and 0 < ae.scale != 1.0  # the scale was fitted
    report = metrics["evaluation"]
    assert report["pixels_per_latent_value"] == 32 * 32 / (3 * 16 * 16)
    assert report["reconstruction_psnr_min"] <= report["reconstruction_psnr"]
    train(second, tmp_path / "latent")
    prior = priors.from_path(str(tmp_path / "latent" / "natural-latent.safetensors"))
    assert isinstance(prior, priors.LatentPrior) and prior.pixel_shape == (1, 32, 32)
    torch.testing.assert_close(prior.autoencoder.encoder[0].weight, ae.encoder[0].weight)
    card = (tmp_path / "latent" / "natural-latent.md").read_text()
    assert "reconstruction_psnr" in card and "mse_wiener" in card
    with pytest.raises(ValueError, match="latent shape"):
        train(wrong, tmp_path / "wrong")  # [3, 32, 32] is not this autoencoder's latent
    with pytest.raises(FileNotFoundError, match="natural-autoencoder install=true"):
        train(OmegaConf.merge(wrong, {"autoencoder": str(tmp_path / "none")}), tmp_path / "x")


def test_the_learning_rate_decays_in_steps():
    milestones = check_milestones([[10, 0.5], [20, 0.4]])
    assert [decay(milestones, s) for s in (0, 9, 10, 19, 20, 99)] == [1, 1, 0.5, 0.5, 0.2, 0.2]
    assert check_milestones(None) == [] and decay([], 5) == 1.0
    for bad in ([[20, 0.5], [10, 0.5]], [[10, 0.0]], [[-1, 0.5]]):
        with pytest.raises(ValueError, match="lr_milestones must be"):
            check_milestones(bad)


def test_the_ema_warm_up_forgets_the_initial_weights():
    assert [ema_decay(0.998, k, False) for k in (0, 100)] == [0.998, 0.998]
    assert ema_decay(0.998, 0, True) == 0.1 and ema_decay(0.998, 10**6, True) == 0.998
    kept = 1.0
    for k in range(1500):
        kept *= ema_decay(0.998, k, True)
    assert kept < 1e-20  # of the initial weights, against 0.998**1500 = 5% without it


def test_the_waveform_prior_trains_and_loads_as_a_one_dimensional_prior(tmp_path: Path):
    """The waveforms config (a dims=1 U-Net on experiments.shared.waveforms) at toy size: it
    trains, its card has the held-out denoising errors, and the file loads as a prior of
    signals (1, T)."""
    with initialize_config_module(version_base=None, config_module="experiments.configs.train"):
        cfg = compose(
            "train",
            overrides=[
                "prior=waveforms", "data.samples=256", "data.evaluation_size=20",
                "shape=[1,256]", "network.channels=[8,16]", "network.attention=[false,false]",
                "steps=2", "batch_size=4", "warmup=1", "checkpoint_every=10", "progress=false",
                "device=cpu",
            ],
        )  # fmt: skip
    metrics = train(cfg, tmp_path)
    assert metrics["steps"] == 2 and metrics["evaluation"]["heldout"] == 20
    prior = priors.weights.read(tmp_path / "waveforms.safetensors")
    assert prior.shape == (1, 256) and prior.network.dims == 1
    x = torch.zeros(3, 1, 256)
    assert prior(x, torch.tensor(0.5)).shape == (3, 1, 256)
