r"""Train a shipped prior or classifier.

    python -m experiments.training.train prior=digits                   # class-conditional prior
    python -m experiments.training.train prior=digits-classifier-noisy  # for classifier guidance
    python -m experiments.training.train prior=digits-classifier        # clean, for evaluation
    python -m experiments.training.train prior=textures install=true    # and install it

Objectives:

- denoisers: v-prediction, :math:`\lVert v_\theta(x_t, t, c) - (\alpha_t \epsilon -
  \sigma_t x) \rVert^2`, or with ``prediction: flow`` flow matching (Lipman et al., 2023),
  :math:`\lVert u_\theta(x_t, t, c) - (\dot\alpha_t x + \dot\sigma_t \epsilon) \rVert^2`
  (:math:`\epsilon - x` on the rectified schedule), with :math:`t \sim U(0, 1)` (or, with
  ``time_sampling``, the log-normal noise levels of Karras et al. 2022 mixed with uniform
  times: see :func:`draw_times`; on the rectified schedule, where :math:`\ln(\sigma_t /
  \alpha_t) = \operatorname{logit}(t)`, these are the logit-normal times of Stable Diffusion
  3, Esser et al. 2024) and the label replaced by the null class with probability
  ``cond_dropout`` (classifier-free guidance from one network);
- autoencoders (the first stage of a latent prior, :class:`priors.ConvAutoencoder`):
  :math:`\lVert D(z) - x \rVert_1` for a draw :math:`z \sim q(z \mid x)` plus
  ``kl_weight`` times :math:`\mathrm{KL}(q(z \mid x) \,\|\, \mathcal{N}(0, I))`, both summed
  per image (Rombach et al., 2022, without their perceptual and adversarial terms); at the
  end the latents' scale is set to one over the standard deviation of the training
  latents;
- latent priors (``kind: latent``): the denoiser loss above on the latents
  :math:`E(x)` of the frozen ``autoencoder`` (a shipped name or a file), exported with it
  as one :class:`priors.LatentPrior`;
- noise-conditional classifiers: cross-entropy on :math:`x_t` over all :math:`t`;
- clean classifiers: cross-entropy on clean images shifted by up to one pixel.

The run folder is ``outputs/train/<name>`` and holds ``checkpoint.pt`` (model, EMA,
optimiser, step, the data generator and torch's global generator, which draws the initial
weights and dropout; written atomically every ``checkpoint_every`` steps): running the same
command again resumes there, bit for bit on the CPU, so a killed run loses at most that
many steps. At the
end the EMA weights are written as ``<name>.safetensors`` with the metrics (held-out
denoising MSE against the Wiener filter of the training split, in latent space for a
latent prior; the autoencoder's held-out reconstruction PSNR; or held-out accuracy) in
``metrics.json`` and a card ``<name>.md``; ``install=true`` copies both into
``priors/weights``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm import tqdm

from experiments.shared.build import build
from experiments.shared.metrics import psnr
from experiments.shared.report import finish
from experiments.shared.runs import launch, prepare_run, write_metrics
from priors import GaussianMixture, LatentPrior, diffuse
from priors.classifier import Classifier
from priors.conv_autoencoder import ConvAutoencoder
from priors.denoising import denoise, noise_time
from priors.files import atomic_write, atomic_write_text
from priors.network import UNetDenoiser
from priors.schedules import Schedule
from priors.tweedie import flow_from_noise, v_from_noise
from priors.weights import WEIGHTS, describe, save
from priors.weights import build as build_module
from priors.weights import read as read_weights

log = logging.getLogger(__name__)

SIGMAS = (0.1, 0.3, 0.5, 1.0)


def device_of(name: str) -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def read_autoencoder(source: str) -> ConvAutoencoder:
    """The frozen autoencoder of a latent prior: a shipped name or a weight file."""
    path = WEIGHTS / f"{source}.safetensors"
    if not path.is_file():
        path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"autoencoder {source!r} is neither a shipped autoencoder nor a file; train one "
            "first (e.g. python -m experiments.training.train prior=natural-autoencoder "
            "install=true)"
        )
    autoencoder = read_weights(path, kind="autoencoder")
    assert isinstance(autoencoder, ConvAutoencoder)
    return autoencoder.requires_grad_(False)


def module_config(cfg: DictConfig) -> dict[str, Any]:
    """The architecture part of the config, as saved in the weight file (for a latent prior,
    the denoiser's; the export adds the autoencoder's, :func:`priors.weights.describe`)."""
    if cfg.kind == "autoencoder":
        return {"shape": list(cfg.shape), **OmegaConf.to_container(cfg.network)}
    config = {"network": OmegaConf.to_container(cfg.network)}
    if cfg.kind in ("denoiser", "latent"):
        config |= {
            "schedule": OmegaConf.to_container(cfg.schedule),
            "shape": list(cfg.shape),
            "prediction": str(cfg.get("prediction", "v")),
        }
    else:
        schedule = cfg.get("schedule")
        config |= {
            "schedule": None if schedule is None else OmegaConf.to_container(schedule),
            "num_classes": int(cfg.num_classes),
        }
    return config


class Encoded:
    """A data set's images as the latents of a frozen autoencoder (its scaled posterior
    means; the latent prior is trained on these, as the latent methods encode)."""

    def __init__(self, data: Any, autoencoder: ConvAutoencoder) -> None:
        self.data, self.autoencoder = data, autoencoder

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        device = next(self.autoencoder.parameters()).device
        chunks = [self.autoencoder.apply_encoder(c.to(device)).cpu() for c in x.split(256)]
        return torch.cat(chunks)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x, label = self.data.sample(n, generator)
        return self.encode(x), label

    def fit_set(self, generator: torch.Generator) -> Tensor:
        return self.encode(self.data.fit_set(generator))

    def evaluation(self) -> tuple[Tensor, Tensor]:
        x, label = self.data.evaluation()
        return self.encode(x), label


def draw_times(schedule: Schedule, n: int, spec: Any, generator: torch.Generator) -> Tensor | None:
    r"""Training times: ``None`` (uniform, drawn by :func:`priors.diffuse`) when ``spec`` is
    ``None``; otherwise each of the ``n`` rows is uniform with probability
    ``spec.uniform_share`` and else at the noise-to-signal ratio
    :math:`\ln(\sigma_t / \alpha_t) \sim \mathcal{N}(\text{mean}, \text{std}^2)` (Karras et
    al., 2022, sec. 5: :math:`P_{mean} = -1.2`, :math:`P_{std} = 1.2` for data in [-1, 1]),
    mapped to time by :meth:`~priors.schedules.Schedule.time_of`. With the v-loss, whose
    weight in :math:`\hat x` is :math:`1 / \sigma_t^2`, this puts the training effort on
    the noise levels at which a restoration's detail is decided rather than on pure noise."""
    if spec is None:
        return None
    share = float(spec.uniform_share)
    if not 0 <= share <= 1 or float(spec.std) <= 0:
        raise ValueError(f"time_sampling needs uniform_share in [0, 1] and std > 0, got {spec}")
    uniform = torch.rand(n, generator=generator, dtype=torch.float64)
    log_ratio = float(spec.mean) + float(spec.std) * torch.randn(
        n, generator=generator, dtype=torch.float64
    )
    pick = torch.rand(n, generator=generator, dtype=torch.float64) < share
    return torch.where(pick, uniform, schedule.time_of(-log_ratio))


def ema_decay(ema: float, step: int, warmup: bool) -> float:
    r"""The EMA's decay at ``step`` (counted from 0): ``ema``, or with ``warmup``
    :math:`\min(\text{ema}, (1 + k) / (10 + k))` (TensorFlow's ``num_updates`` rule), so that
    the average forgets the initial weights within the first steps instead of keeping
    :math:`\text{ema}^k` of them (5% after 1500 steps at 0.998)."""
    return min(ema, (1 + step) / (10 + step)) if warmup else ema


def check_milestones(milestones: Any) -> list[tuple[int, float]]:
    """``lr_milestones``: ``[[step, factor], ...]`` with increasing steps and positive
    factors (``null``: none)."""
    if milestones is None:
        return []
    pairs = [(int(step), float(factor)) for step, factor in milestones]
    steps = [step for step, _ in pairs]
    if steps != sorted(set(steps)) or any(f <= 0 for _, f in pairs) or min(steps) < 0:
        raise ValueError(
            "lr_milestones must be [[step, factor], ...] with increasing steps >= 0 and "
            f"positive factors, got {milestones}"
        )
    return pairs


def decay(milestones: list[tuple[int, float]], step: int) -> float:
    """The learning rate's step decay: the product of the factors of the milestones reached
    (from that step on)."""
    factor = 1.0
    for at, f in milestones:
        if step >= at:
            factor *= f
    return factor


def denoiser_loss(
    model: UNetDenoiser,
    x: Tensor,
    label: Tensor,
    dropout: float,
    generator: torch.Generator,
    time_sampling: Any = None,
) -> Tensor:
    """The regression loss of the model's prediction (v or flow matching) with condition
    dropout, at times from :func:`draw_times`."""
    b = x.shape[0]
    t = draw_times(model.schedule, b, time_sampling, generator)
    n = diffuse(model.schedule, x, generator, t)
    if model.prediction == "flow":
        rates = (
            c.to(x.dtype).view(-1, *[1] * (x.ndim - 1)) for c in model.schedule.derivatives(n.t)
        )
        target = flow_from_noise(x, n.eps, *rates)
    else:
        target = v_from_noise(x, n.eps, n.alpha_t, n.sigma_t)
    if model.num_classes:
        drop = torch.rand(b, generator=generator) < dropout
        label = torch.where(drop, -1, label)
    else:
        label = None
    device = next(model.parameters()).device
    label = None if label is None else label.to(device)
    prediction = model.network(n.x_t.to(device), n.t.to(device), label)
    return nn.functional.mse_loss(prediction, target.to(device))


def autoencoder_loss(
    model: ConvAutoencoder, x: Tensor, generator: torch.Generator, kl_weight: float
) -> Tensor:
    """The reconstruction loss of a draw from the encoder's posterior plus the weighted KL
    penalty, each summed per image and averaged over the batch."""
    device = next(model.parameters()).device
    x = x.to(device)
    mean, log_var = model.posterior(x)
    noise = torch.randn(mean.shape, generator=generator).to(device)
    z = mean + (0.5 * log_var).exp() * noise
    reconstruction = (model.reconstruct(z) - x).abs().flatten(1).sum(1)
    return (reconstruction + kl_weight * model.kl(mean, log_var)).mean()


def classifier_loss(
    model: Classifier, x: Tensor, label: Tensor, generator: torch.Generator
) -> Tensor:
    """Cross-entropy on noisy inputs (noise-conditional) or shifted clean ones."""
    device = next(model.parameters()).device
    if model.noisy:
        n = diffuse(model.schedule, x, generator)
        t, x = n.t, n.x_t
        logits = model(x.to(device), t.to(device))
    else:
        shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
        logits = model(torch.roll(x, shift, dims=(-2, -1)).to(device))
    return nn.functional.cross_entropy(logits, label.to(device))


@torch.no_grad()
def evaluate_denoiser(model: UNetDenoiser, train: Any, test: Any, seed: int) -> dict[str, Any]:
    r"""Held-out denoising MSE per pixel at noise levels :math:`\sigma` (observations
    :math:`y = x + \sigma n`, given to the prior as :math:`x_t = \alpha_t y` at the time with
    :math:`\sigma_t / \alpha_t = \sigma`), beside the Wiener filter fitted on the training
    split (a one-component Gaussian mixture: the exact posterior mean of a Gaussian prior)."""
    g = torch.Generator().manual_seed(seed)
    x, label = test.evaluation()
    fit = train.fit_set(g).flatten(1).double()
    mean, cov = fit.mean(0), torch.cov(fit.T) + 1e-6 * torch.eye(fit.shape[1], dtype=torch.float64)
    wiener = GaussianMixture(torch.ones(1), mean[None], cov[None], model.schedule)
    device = next(model.parameters()).device
    rows = {}
    for sigma in SIGMAS:
        y = x + sigma * torch.randn(x.shape, generator=g)
        prior = torch.cat(
            [denoise(model, chunk.to(device), sigma).cpu() for chunk in y.split(256)]
        )
        conditional = (
            torch.cat(
                [
                    denoise(model, chunk.to(device), sigma, label=lab.to(device)).cpu()
                    for chunk, lab in zip(y.split(256), label.split(256), strict=True)
                ]
            )
            if model.num_classes
            else prior
        )
        linear = denoise(wiener, y.flatten(1).double(), sigma).float().view_as(x)
        rows[str(sigma)] = {
            "t": float(noise_time(model.schedule, sigma)),
            "mse_prior": float((prior - x).pow(2).mean()),
            "mse_prior_conditional": float((conditional - x).pow(2).mean()),
            "mse_wiener": float((linear - x).pow(2).mean()),
            "mse_noisy": float((y - x).pow(2).mean()),
        }
    return {"denoising_mse": rows, "heldout": len(x)}


@torch.no_grad()
def evaluate_autoencoder(model: ConvAutoencoder, test: Any) -> dict[str, Any]:
    """Held-out reconstruction :math:`D(E(x))` (the posterior mean decoded): PSNR on
    :math:`[0, 1]` (mean over the crops, and its lowest), beside the latent's scale and
    compression."""
    x, _ = test.evaluation()
    device = next(model.parameters()).device
    out = torch.cat(
        [model.apply_decoder(model.apply_encoder(c.to(device))).cpu() for c in x.split(64)]
    )
    scores = psnr(out.double().clamp(-1, 1), x.double())
    latent = model.latent_shape
    return {
        "reconstruction_psnr": float(scores.mean()),
        "reconstruction_psnr_min": float(scores.min()),
        "scale": model.scale,
        "pixels_per_latent_value": math.prod(model.shape) / math.prod(latent),
        "heldout": len(x),
    }


def latent_scale(model: ConvAutoencoder, train: Any, seed: int) -> float:
    """One over the standard deviation of the (unscaled) latents of the training set's fit
    crops: the scale that gives the latent prior unit-variance data, as Stable Diffusion's
    0.18215 does for its autoencoder."""
    with torch.no_grad():
        x = train.fit_set(torch.Generator().manual_seed(seed))
        device = next(model.parameters()).device
        z = torch.cat([model.posterior(c.to(device))[0].cpu() for c in x.split(64)])
    return float(1 / z.double().std())


@torch.no_grad()
def evaluate_classifier(model: Classifier, test: Any, seed: int) -> dict[str, Any]:
    """Held-out accuracy (clean), or accuracy at several times (noise-conditional)."""
    x, label = test.evaluation()
    device = next(model.parameters()).device
    if not model.noisy:
        logits = torch.cat([model(c.to(device)).cpu() for c in x.split(512)])
        return {"accuracy": float((logits.argmax(1) == label).float().mean()), "heldout": len(x)}
    g = torch.Generator().manual_seed(seed)
    accuracy = {}
    for t in (0.0, 0.25, 0.5, 0.75, 0.9):
        alpha_t, sigma_t = (float(c) for c in model.schedule(torch.tensor(t)))
        x_t = alpha_t * x + sigma_t * torch.randn(x.shape, generator=g)
        logits = torch.cat([model(c.to(device), t).cpu() for c in x_t.split(512)])
        accuracy[str(t)] = float((logits.argmax(1) == label).float().mean())
    return {"accuracy_at_t": accuracy, "heldout": len(x)}


def _atomic_torch_save(state: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


#: Overrides that do not change the weights a run trains (left out of the card's command).
_UNRECORDED = ("prior=", "steps=", "install=", "progress=", "threads=", "checkpoint_every=")


def command(cfg: DictConfig, steps: int, overrides: Sequence[str] = ()) -> str:
    """The command that trains these weights: the prior, the run's other overrides (those
    that change the weights) and the steps done."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(_UNRECORDED)]
    parts = ["python -m experiments.training.train", f"prior={cfg.name}", *kept]
    return " ".join([*parts, f"steps={steps}", "install=true"])


def card(
    cfg: DictConfig,
    metrics: dict[str, Any],
    provenance: str | None = None,
    overrides: Sequence[str] = (),
) -> str:
    """The weight file's card: data, split, command (with the run's overrides), metrics (and
    the data's sources and licences where the data set lists them)."""
    sources = f"\n## Data sources\n\n{provenance}" if provenance else ""
    return (
        f"# {cfg.name}\n\n"
        f"- kind: {cfg.kind}\n"
        f"- data: {cfg.data_description}\n"
        f"- command: `{command(cfg, metrics['steps'], overrides)}`\n"
        f"- steps: {metrics['steps']}, batch {cfg.batch_size}, lr {cfg.lr}, EMA {cfg.ema}, "
        f"seed {cfg.seed}, device {metrics['device']}, wall time {metrics['wall_s']:.0f} s\n"
        f"- parameters: {metrics['parameters']}\n\n"
        "## Metrics (held-out split)\n\n```json\n"
        f"{json.dumps(metrics['evaluation'], indent=2)}\n```\n{sources}"
    )


def train(cfg: DictConfig, out_dir: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Trains (or resumes) the configured model in ``out_dir`` and exports it; the card's
    command carries ``overrides`` (the command line's)."""
    if int(cfg.steps) < 1 or int(cfg.batch_size) < 1:
        raise ValueError("steps and batch_size must be positive")
    if not 0 <= float(cfg.ema) < 1:
        raise ValueError(f"ema must lie in [0, 1), got {cfg.ema}")
    device = device_of(str(cfg.device))
    torch.set_num_threads(int(cfg.threads))
    budget = None if cfg.get("max_minutes") is None else 60 * float(cfg.max_minutes)
    milestones = check_milestones(cfg.get("lr_milestones"))
    autoencoder = None
    if cfg.kind == "latent":
        if cfg.get("autoencoder") is None:
            raise ValueError("a latent prior needs autoencoder=<shipped name or weight file>")
        autoencoder = read_autoencoder(str(cfg.autoencoder)).to(device)
        if tuple(cfg.shape) != autoencoder.latent_shape:
            raise ValueError(
                f"shape must be the autoencoder's latent shape {list(autoencoder.latent_shape)}, "
                f"got {list(cfg.shape)}"
            )
    config = module_config(cfg)
    torch.manual_seed(int(cfg.seed))  # initial weights and dropout use the global generator
    model = build_module("denoiser" if autoencoder else cfg.kind, config).train().to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimiser = torch.optim.AdamW(model.parameters(), lr=float(cfg.lr), weight_decay=0.0)
    data = build(cfg.data, split="train")
    if autoencoder is not None:
        data = Encoded(data, autoencoder)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    step, elapsed = 0, 0.0
    checkpoint = out_dir / "checkpoint.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["global_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        step, elapsed = int(state["step"]), float(state["elapsed"])
    start = time.perf_counter() - elapsed
    bar = tqdm(total=int(cfg.steps), initial=step, desc=str(cfg.name), disable=not cfg.progress)
    while step < int(cfg.steps):
        if budget is not None and time.perf_counter() - start > budget:
            break  # the card records the steps done; steps=<that> reproduces the run
        x, label = data.sample(int(cfg.batch_size), generator)
        warmup = min(1.0, (step + 1) / int(cfg.warmup))
        for group in optimiser.param_groups:
            group["lr"] = float(cfg.lr) * warmup * decay(milestones, step)
        if cfg.kind in ("denoiser", "latent"):
            loss = denoiser_loss(
                model, x, label, float(cfg.cond_dropout), generator, cfg.get("time_sampling")
            )
        elif cfg.kind == "autoencoder":
            loss = autoencoder_loss(model, x, generator, float(cfg.kl_weight))
        else:
            loss = classifier_loss(model, x, label, generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {float(loss)} at step {step}")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                p_ema.lerp_(p, 1 - ema_decay(float(cfg.ema), step, bool(cfg.ema_warmup)))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        last = step == int(cfg.steps) or (
            budget is not None and time.perf_counter() - start > budget
        )
        if step % int(cfg.checkpoint_every) == 0 or last:
            state = {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimiser": optimiser.state_dict(),
                "generator": generator.get_state(),
                "global_rng": torch.get_rng_state(),
                "step": step,
                "elapsed": time.perf_counter() - start,
            }
            if device.type == "cuda":
                state["cuda_rng"] = torch.cuda.get_rng_state(device)
            _atomic_torch_save(state, checkpoint)
    bar.close()
    wall = time.perf_counter() - start
    test = build(cfg.data, split="test")
    kind, exported = str(cfg.kind), ema
    if cfg.kind == "denoiser":
        evaluation = evaluate_denoiser(ema, data, test, int(cfg.seed))
    elif cfg.kind == "latent":
        assert autoencoder is not None
        evaluation = evaluate_denoiser(ema, data, Encoded(test, autoencoder), int(cfg.seed))
        evaluation["autoencoder"] = evaluate_autoencoder(autoencoder, test)
        config = {"autoencoder": describe(autoencoder)[1], "denoiser": config}
        exported = LatentPrior(autoencoder, ema)
    elif cfg.kind == "autoencoder":
        ema.scale = latent_scale(ema, data, int(cfg.seed))
        config = describe(ema)[1]
        evaluation = evaluate_autoencoder(ema, test)
    else:
        evaluation = evaluate_classifier(ema, test, int(cfg.seed))
    metrics = {
        "name": str(cfg.name),
        "steps": step,
        "wall_s": wall,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "parameters": sum(p.numel() for p in ema.parameters()),
        "evaluation": evaluation,
    }
    weights = save(exported.cpu(), out_dir / f"{cfg.name}.safetensors", kind, config)
    source = data.data if isinstance(data, Encoded) else data
    provenance = source.provenance() if hasattr(source, "provenance") else None
    atomic_write_text(out_dir / f"{cfg.name}.md", card(cfg, metrics, provenance, overrides))
    if cfg.install:
        WEIGHTS.mkdir(exist_ok=True)
        shutil.copyfile(weights, WEIGHTS / weights.name)
        shutil.copyfile(out_dir / f"{cfg.name}.md", WEIGHTS / f"{cfg.name}.md")
        log.info("installed %s and its card in %s", weights.name, WEIGHTS)
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


@hydra.main(version_base=None, config_path="../configs/train", config_name="train")
def main(cfg: DictConfig) -> None:
    out_dir = prepare_run(cfg)  # unknown keys, wrong kinds of values, the run folder
    overrides = list(HydraConfig.get().overrides.task)
    # resumes from its checkpoint (also with more steps), not through runs.resumable
    metrics = train(cfg, out_dir, overrides)
    finish(log, out_dir, card(cfg, metrics, overrides=overrides))


if __name__ == "__main__":
    launch(main)
