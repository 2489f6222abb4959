r"""Throughput of guided restorations on a device, per acceleration mode.

    python -m experiments.benchmarks.throughput                      # the best device here
    python -m experiments.benchmarks.throughput device=cpu images=2  # the CPU baseline

Restores ``images`` held-out crops of ``size`` x ``size`` pixels of the shipped textures
prior (fully convolutional, so it runs at 64 x 64 although trained on 32 x 32) from box
inpainting at :math:`\sigma_y` = ``sigma_y`` with DPS (the paper's update,
:class:`guided.DPSSampler`: one network evaluation and one vector-Jacobian product per
step) over ``steps`` steps, once per mode of ``modes`` (:class:`priors.Accelerated`
settings):

- ``fp32``: the plain network;
- ``bf16``: autocast to bfloat16;
- ``bf16_channels_last``: bf16 with the channels-last layout;
- ``bf16_compile``: bf16 with ``torch.compile`` (the first run, which compiles, is not
  timed).

Every mode restores the same batch from the same initial noise, measurement and seed.
Reports restorations per minute (median over ``repeats`` timed runs after one warm-up),
the PSNR of the restorations against the truth, and their deviation from the fp32 ones
(the cost of the lower precision), with the device's name; with ``cpu_images`` > 0 on a
GPU, a CPU fp32 run on ``threads`` threads in the same process gives the speed-up. Writes
``metrics.json`` and ``table.md``.
"""

from __future__ import annotations

import logging

from pathlib import Path
from typing import Any

import hydra
import torch

from omegaconf import DictConfig

import guided
import priors

from experiments.shared.metrics import psnr
from experiments.shared.report import serve
from experiments.shared.runs import launch, write_metrics
from experiments.shared.tasks import box_inpainting
from experiments.shared.timing import timed

log = logging.getLogger(__name__)

MODES = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "bf16_channels_last": {"precision": "bf16", "channels_last": True},
    "bf16_compile": {"precision": "bf16", "compile": True},
}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda; got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available")
    return torch.device(name)


def _check(cfg: DictConfig) -> None:
    unknown = [m for m in cfg.modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; available: {list(MODES)}")
    for key in ("images", "steps", "repeats", "size", "threads"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    if int(cfg.size) % 4:
        raise ValueError(f"size must be divisible by 4 (the U-Net's factor), got {cfg.size}")
    if float(cfg.sigma_y) < 0:
        raise ValueError(f"sigma_y must be >= 0, got {cfg.sigma_y}")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's and the thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def restore(
    cfg: DictConfig, mode: str, device: torch.device, images: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Restores ``images`` crops in ``mode`` on ``device``: the truth, the restorations
    (on the CPU) and the median wall time of the timed runs after a warm-up (seconds)."""
    truth = held_out_crops(cfg, images)
    shape = tuple(truth.shape[1:])
    op = box_inpainting(shape, 0.5).float()
    g = torch.Generator().manual_seed(int(cfg.seed))
    clean = op(truth)
    y = clean + float(cfg.sigma_y) * torch.randn(clean.shape, generator=g)
    prior = priors.load("textures").to(device)
    fast = priors.Accelerated(prior, **MODES[mode])
    op, y = op.to(device), y.to(device)
    sampler = guided.DPSSampler(op, y, zeta=1.0)
    x_T = guided.initial_noise(prior.schedule, (images, *shape), g).to(device)
    ts = guided.time_grid(int(cfg.steps))

    def run() -> torch.Tensor:  # the warm-up call also compiles
        gen = torch.Generator(device).manual_seed(int(cfg.seed) + 1)
        return sampler(fast, x_T, ts, generator=gen)

    out, wall = timed(run, int(cfg.repeats), device)
    return truth, out.float().cpu(), wall


def held_out_crops(cfg: DictConfig, images: int) -> torch.Tensor:
    """``images`` held-out textures crops of ``cfg.size`` pixels (float32), the split's
    crops repeated in turn when it has fewer."""
    from experiments.shared.data import Textures

    crops, _ = Textures("test", crop=int(cfg.size)).evaluation()
    return crops[torch.arange(images) % crops.shape[0]].float()


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    _check(cfg)
    torch.set_num_threads(int(cfg.threads))
    device = _device(str(cfg.device))
    results: dict[str, dict[str, Any]] = {}
    reference = None
    for mode in cfg.modes:
        log.info("%s: restoring %d images on %s", mode, cfg.images, device)
        truth, x, wall = restore(cfg, mode, device, int(cfg.images))
        reference = x if reference is None else reference
        results[mode] = {
            "per_minute": 60 * int(cfg.images) / wall,
            "wall_s": wall,
            "psnr": float(psnr(x.double(), truth.double()).mean()),
            "deviation_from_first_mode": float((x - reference).abs().max()),
        }
        log.info("%s: %s", mode, results[mode])
    metrics: dict[str, Any] = {
        "device": device_name(device),
        "results": results,
        "images": int(cfg.images),
        "size": int(cfg.size),
        "steps": int(cfg.steps),
    }
    if device.type == "cuda" and int(cfg.cpu_images) > 0:
        truth, x, wall = restore(cfg, "fp32", torch.device("cpu"), int(cfg.cpu_images))
        metrics["cpu"] = {
            "device": device_name(torch.device("cpu")),
            "per_minute": 60 * int(cfg.cpu_images) / wall,
            "psnr": float(psnr(x.double(), truth.double()).mean()),
        }
        best = max(r["per_minute"] for r in results.values())
        metrics["speedup_over_cpu"] = best / metrics["cpu"]["per_minute"]
    write(metrics, cfg, out_dir)
    return metrics


def write(metrics: dict[str, Any], cfg: DictConfig, out: Path) -> None:
    lines = [
        (
            f"Guided restorations (DPS, box inpainting, sigma_y {cfg.sigma_y}) of "
            f"{cfg.size}x{cfg.size} textures, {cfg.steps} steps, batch {cfg.images}, on "
            f"{metrics['device']}"
        ),
        "",
        "| mode | restorations / min | wall (s) | PSNR | max deviation from the first mode |",
        "|---|---|---|---|---|",
    ]
    for mode, r in metrics["results"].items():
        lines.append(
            f"| {mode} | {r['per_minute']:.1f} | {r['wall_s']:.2f} | {r['psnr']:.2f} | "
            f"{r['deviation_from_first_mode']:.3g} |"
        )
    if "cpu" in metrics:
        cpu = metrics["cpu"]
        lines += [
            "",
            (
                f"CPU fp32 on {cpu['device']}, batch {cfg.cpu_images}: "
                f"{cpu['per_minute']:.2f} restorations / min (PSNR {cpu['psnr']:.2f}); best GPU "
                f"mode {metrics['speedup_over_cpu']:.0f}x faster"
            ),
        ]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    write_metrics(metrics, out)  # last: the run's finished mark


@hydra.main(version_base=None, config_path="../configs/throughput", config_name="throughput")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log)


if __name__ == "__main__":
    launch(main)
