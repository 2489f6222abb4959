r"""Is the prior a strong denoiser? Its one-step posterior mean against BM3D.

    python -m experiments.benchmarks.denoise                  # natural prior, held-out crops
    python -m experiments.benchmarks.denoise 'sigmas=[25]' crops=43

Every sampler builds on the prior's denoiser :math:`\hat x(x_t, t) = E[x \mid x_t]`; if it
loses to a classical denoiser at the noise levels of a restoration, no guidance rule built on
it will beat plug-and-play with that denoiser. For each noise level :math:`\sigma` (of 255
grey levels) the same noisy crops :math:`y = x + \sigma n` go to

- the prior: :math:`x_t = \alpha_t y` at the time with :math:`\sigma_t / \alpha_t = 2 \sigma
  / 255` (images in [-1, 1]), one network evaluation, :math:`\hat x(x_t, t)` (through
  :class:`priors.Tiled`, so any crop size works);
- BM3D (Dabov et al., 2007) with the true :math:`\sigma`: deepinv's ``BM3D`` denoiser, which
  calls the ``bm3d`` package (Mäkinen et al.'s reference implementation).

Writes ``metrics.json`` and ``table.md``: PSNR and SSIM of each, and the paired PSNR
difference (prior − BM3D) with its 95% interval over crops.
"""

from __future__ import annotations

import logging
import time

from pathlib import Path
from typing import Any

import hydra
import torch

from omegaconf import DictConfig, OmegaConf

import checks
import priors

from experiments.shared.metrics import paired, psnr, ssim
from experiments.shared.photographs import (
    HELD_OUT,
    TRAINING,
    Photographs,
    evenly_spaced,
    grid_crops,
)
from experiments.shared.report import serve
from experiments.shared.runs import launch, write_metrics
from priors.denoising import denoise

log = logging.getLogger(__name__)


def held_out_crops(names: list[str], crop: int, count: int) -> torch.Tensor:
    """``count`` crops of side ``crop`` in [-1, 1], evenly spaced over the grid crops of the
    named held-out photographs."""
    training = sorted({p.name for p in TRAINING} & set(names))
    if training:
        raise ValueError(f"photographs {training} are training photographs: score held-out ones")
    unknown = sorted(set(names) - {p.name for p in HELD_OUT})
    if unknown:
        raise ValueError(f"photographs must be among {[p.name for p in HELD_OUT]}, got {unknown}")
    data = Photographs("test", crop=crop)
    grids = [
        grid_crops(im, crop) for n, im in zip(data.names, data.images, strict=True) if n in names
    ]
    return evenly_spaced(torch.cat(grids), count, "crops", f" for crop {crop}")


def prior_denoise(prior: priors.Denoiser, y: torch.Tensor, noise: float) -> torch.Tensor:
    """The posterior mean at the time whose noise-to-signal ratio is ``noise``."""
    with torch.no_grad():
        return torch.cat([denoise(prior, row[None], noise) for row in y])


def bm3d_denoise(y: torch.Tensor, noise: float) -> torch.Tensor:
    """deepinv's BM3D on [0, 1] images, noise ``noise`` in those units."""
    from deepinv.models import BM3D

    bm3d = BM3D()
    return torch.cat([bm3d(row[None].float(), noise) for row in y])


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    for key in ("crop", "crops", "threads"):
        checks.integer(cfg[key], key, low=1)
    checks.integer(cfg.seed, "seed", low=0)
    sigmas = [checks.number(s, "sigmas", low=0, open_low=True) for s in cfg.sigmas]
    torch.set_num_threads(int(cfg.threads))
    tile = None if cfg.tile is None else int(cfg.tile)
    prior = priors.Tiled(priors.from_path(str(cfg.prior)), tile=tile)
    x = held_out_crops([str(n) for n in cfg.photographs], int(cfg.crop), int(cfg.crops))
    rows: dict[str, Any] = {}
    for sigma in sigmas:
        g = torch.Generator().manual_seed(int(cfg.seed))
        noise = 2 * sigma / 255  # in [-1, 1] units
        y = x + noise * torch.randn(x.shape, generator=g)
        start = time.perf_counter()
        ours = prior_denoise(prior, y, noise)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs = bm3d_denoise((y + 1) / 2, sigma / 255) * 2 - 1
        bm3d_s = time.perf_counter() - start
        scores = {
            name: {"psnr": psnr(z, x), "ssim": ssim(z, x)}
            for name, z in (("noisy", y), ("prior", ours), ("bm3d", theirs))
        }
        gain, half = paired(scores["prior"]["psnr"], scores["bm3d"]["psnr"])
        rows[str(sigma)] = {
            name: {k: float(v.mean()) for k, v in s.items()} for name, s in scores.items()
        } | {"prior_minus_bm3d": gain, "interval": half, "prior_s": ours_s, "bm3d_s": bm3d_s}
        log.info("sigma %s: prior %.2f dB, BM3D %.2f dB", sigma, *(
            rows[str(sigma)][k]["psnr"] for k in ("prior", "bm3d")
        ))  # fmt: skip
    metrics = {
        "prior": str(cfg.prior),
        "crops": int(cfg.crops),
        "crop": int(cfg.crop),
        "sigmas": rows,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (out_dir / "table.md").write_text(table(metrics))
    write_metrics(metrics, out_dir)
    return metrics


def table(metrics: dict[str, Any]) -> str:
    side = metrics["crop"]
    title = f"{metrics['crops']} held-out crops of {side}x{side}, prior {metrics['prior']}"
    header = "| sigma (of 255) | noisy | prior (one step) | BM3D | prior - BM3D (95%) | s |"
    lines = [f"{title}: PSNR dB / SSIM", "", header, "|---|---|---|---|---|---|"]
    for sigma, r in metrics["sigmas"].items():
        cells = [f"{r[k]['psnr']:.2f} / {r[k]['ssim']:.3f}" for k in ("noisy", "prior", "bm3d")]
        lines.append(
            f"| {sigma} | {' | '.join(cells)} | {r['prior_minus_bm3d']:+.2f} ± "
            f"{r['interval']:.2f} | prior {r['prior_s']:.1f}, BM3D {r['bm3d_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


@hydra.main(version_base=None, config_path="../configs/denoise", config_name="denoise")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log, table)


if __name__ == "__main__":
    launch(main)
