r"""Train a shipped prior or classifier.

    python -m experiments.training.train prior=digits                   # class-conditional prior
    python -m experiments.training.train prior=digits-classifier-noisy  # for classifier guidance
    python -m experiments.training.train prior=digits-classifier        # clean, for evaluation
    python -m experiments.training.train prior=textures install=true    # and install it

Objectives:

- denoisers: v-prediction, :math:`\lVert v_\theta(x_t, t, c) - (\alpha_t \epsilon -
  \sigma_t x) \rVert^2` with :math:`t \sim U(0, 1)` (or, with ``time_sampling``, the
  log-normal noise levels of Karras et al. 2022 mixed with uniform times: see
  :func:`draw_times`) and the label replaced by the null class with probability
  ``cond_dropout`` (classifier-free guidance from one network);
- noise-conditional classifiers: cross-entropy on :math:`x_t` over all :math:`t`;
- clean classifiers: cross-entropy on clean images shifted by up to one pixel.

The run folder is ``outputs/train/<name>`` and holds ``checkpoint.pt`` (model, EMA,
optimiser, step, the data generator and torch's global generator, which draws the initial
weights and dropout; written atomically every ``checkpoint_every`` steps): running the same
command again resumes there, bit for bit on the CPU, so a killed run loses at most that
many steps. At the
end the EMA weights are written as ``<name>.safetensors`` with the metrics (held-out
denoising MSE against the Wiener filter of the training split, or held-out accuracy) in
``metrics.json`` and a card ``<name>.md``; ``install=true`` copies both into
``priors/weights``.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time

from pathlib import Path
from typing import Any

import hydra
import torch

from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm import tqdm

from experiments.shared.build import build
from experiments.shared.report import finish
from experiments.shared.runs import launch, prepare_run, write_metrics
from priors import GaussianMixture, diffuse
from priors.classifier import Classifier
from priors.denoising import denoise, noise_time
from priors.files import atomic_write, atomic_write_text
from priors.network import UNetDenoiser
from priors.schedules import Schedule
from priors.tweedie import v_from_noise
from priors.weights import WEIGHTS, save
from priors.weights import build as build_module

log = logging.getLogger(__name__)

SIGMAS = (0.1, 0.3, 0.5, 1.0)


def device_of(name: str) -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def module_config(cfg: DictConfig) -> dict[str, Any]:
    """The architecture part of the config, as saved in the weight file."""
    config = {"network": OmegaConf.to_container(cfg.network)}
    if cfg.kind == "denoiser":
        config |= {"schedule": OmegaConf.to_container(cfg.schedule), "shape": list(cfg.shape)}
    else:
        schedule = cfg.get("schedule")
        config |= {
            "schedule": None if schedule is None else OmegaConf.to_container(schedule),
            "num_classes": int(cfg.num_classes),
        }
    return config


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
    """The v-prediction loss with condition dropout, at times from :func:`draw_times`."""
    b = x.shape[0]
    t = draw_times(model.schedule, b, time_sampling, generator)
    n = diffuse(model.schedule, x, generator, t)
    v = v_from_noise(x, n.eps, n.alpha_t, n.sigma_t)
    if model.num_classes:
        drop = torch.rand(b, generator=generator) < dropout
        label = torch.where(drop, -1, label)
    else:
        label = None
    device = next(model.parameters()).device
    label = None if label is None else label.to(device)
    prediction = model.network(n.x_t.to(device), n.t.to(device), label)
    return nn.functional.mse_loss(prediction, v.to(device))


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


def card(cfg: DictConfig, metrics: dict[str, Any], provenance: str | None = None) -> str:
    """The weight file's card: data, split, command, metrics (and the data's sources and
    licences where the data set lists them)."""
    sources = f"\n## Data sources\n\n{provenance}" if provenance else ""
    return (
        f"# {cfg.name}\n\n"
        f"- kind: {cfg.kind}\n"
        f"- data: {cfg.data_description}\n"
        f"- command: `python -m experiments.training.train prior={cfg.name} "
        f"steps={metrics['steps']} install=true`\n"
        f"- steps: {metrics['steps']}, batch {cfg.batch_size}, lr {cfg.lr}, EMA {cfg.ema}, "
        f"seed {cfg.seed}, device {metrics['device']}, wall time {metrics['wall_s']:.0f} s\n"
        f"- parameters: {metrics['parameters']}\n\n"
        "## Metrics (held-out split)\n\n```json\n"
        f"{json.dumps(metrics['evaluation'], indent=2)}\n```\n{sources}"
    )


def train(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Trains (or resumes) the configured model in ``out_dir`` and exports it."""
    if int(cfg.steps) < 1 or int(cfg.batch_size) < 1:
        raise ValueError("steps and batch_size must be positive")
    if not 0 <= float(cfg.ema) < 1:
        raise ValueError(f"ema must lie in [0, 1), got {cfg.ema}")
    device = device_of(str(cfg.device))
    torch.set_num_threads(int(cfg.threads))
    budget = None if cfg.get("max_minutes") is None else 60 * float(cfg.max_minutes)
    milestones = check_milestones(cfg.get("lr_milestones"))
    config = module_config(cfg)
    torch.manual_seed(int(cfg.seed))  # initial weights and dropout use the global generator
    model = build_module(cfg.kind, config).train().to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimiser = torch.optim.AdamW(model.parameters(), lr=float(cfg.lr), weight_decay=0.0)
    data = build(cfg.data, split="train")
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
        if cfg.kind == "denoiser":
            loss = denoiser_loss(
                model, x, label, float(cfg.cond_dropout), generator, cfg.get("time_sampling")
            )
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
    if cfg.kind == "denoiser":
        evaluation = evaluate_denoiser(ema, data, test, int(cfg.seed))
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
    weights = save(ema.cpu(), out_dir / f"{cfg.name}.safetensors", str(cfg.kind), config)
    provenance = data.provenance() if hasattr(data, "provenance") else None
    atomic_write_text(out_dir / f"{cfg.name}.md", card(cfg, metrics, provenance))
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
    # resumes from its checkpoint (also with more steps), not through runs.resumable
    metrics = train(cfg, out_dir)
    finish(log, out_dir, card(cfg, metrics))


if __name__ == "__main__":
    launch(main)
