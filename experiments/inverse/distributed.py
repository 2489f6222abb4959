r"""Batched sampling across processes (``torchrun``, any ``torch.distributed`` backend).

    torchrun --nproc_per_node 2 -m experiments.inverse.distributed steps=50 images=16
    python -m experiments.inverse.distributed                  # one process: the same result

Every sampler here treats rows independently: row :math:`i` of the output depends only on
row :math:`i` of the initial state and on its own generator. So a batch splits into
contiguous shards, one per process, each process samples its shard with the rows' own
generators, and an all-gather puts the rows back in order: the result equals the
single-process one (up to the floating-point effect of a smaller batch on the network's
matrix products). :func:`sample` does this inside an initialised process group and falls
back to a plain call outside one.

The app restores ``images`` held-out digits from box inpainting with PiGDM (``steps`` DDPM
steps, one generator per image seeded from ``seed``) across the processes; rank 0 writes
``restored.pt``, ``metrics.json`` (PSNR, processes, rows per process, wall time) into
``out_dir`` (the Hydra run folder by default).
"""

from __future__ import annotations

import logging
import os
import time

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.distributed as dist

from omegaconf import DictConfig

import guided
import operators
import priors

from experiments.shared.data import held_out
from experiments.shared.metrics import psnr
from experiments.shared.report import finish, markdown_table
from experiments.shared.runs import launch, prepare_run, write_metrics
from experiments.shared.seeds import generators
from experiments.shared.tasks import box_inpainting
from priors.files import atomic_write

log = logging.getLogger(__name__)


def shard(rows: int, rank: int, world: int) -> slice:
    """The contiguous rows of process ``rank`` among ``world`` (sizes differ by at most 1)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must lie in [0, {world}), got {rank}")
    base, extra = divmod(rows, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def sample(
    sampler: guided.Sampler,
    denoiser: priors.Denoiser | Callable[[slice], priors.Denoiser],
    x_T: torch.Tensor,
    ts: torch.Tensor,
    generator: Sequence[torch.Generator],
    **kwargs: Any,
) -> torch.Tensor:
    """``sampler(denoiser, x_T, ts, generator=generator, **kwargs)`` with the rows split
    over the processes of the current group; every process returns all rows, in order.

    One generator per row is required, so that a row's draws do not depend on the split.
    ``denoiser`` is a denoiser, or a function of the process's rows (a ``slice``) that
    builds one, for guidance whose measurement has one row per sample. Row-shaped keywords
    (tensors with one entry per row, such as ``label``) are split with the rows; anything
    else is passed whole."""
    rows = x_T.shape[0]
    if isinstance(generator, torch.Generator) or len(generator) != rows:
        raise ValueError("distributed sampling needs one generator per row of x_T")
    single = not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1
    world, rank = (1, 0) if single else (dist.get_world_size(), dist.get_rank())
    mine = shard(rows, rank, world)
    model = denoiser if isinstance(denoiser, priors.Denoiser) else denoiser(mine)
    local = {
        k: v[mine] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == rows else v
        for k, v in kwargs.items()
    }
    out = sampler(model, x_T[mine], ts, generator=list(generator[mine]), **local)
    if single:
        return out
    pieces: list[torch.Tensor | None] = [None] * world
    dist.all_gather_object(pieces, out)
    return torch.cat([p for p in pieces if p is not None])


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    for key in ("images", "steps"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    torch.set_num_threads(int(cfg.threads))
    prior = priors.load("digits")
    truth = held_out("digits", int(cfg.images))
    op = box_inpainting(prior.shape, 0.5)
    y = operators.GaussianNoise(0.05)(op(truth), torch.Generator().manual_seed(int(cfg.seed)))
    gens = generators(int(cfg.seed), truth.shape[0], 1)
    x_T = guided.initial_noise(prior.schedule, (truth.shape[0], *prior.shape), gens)
    x_T = x_T.double()

    def restoration(rows: slice) -> priors.Denoiser:  # the measurement rows of a shard
        return guided.GuidedDenoiser(prior, guided.PiGDM(op, y[rows], 0.05))

    start = time.perf_counter()
    x = sample(guided.DDPM(), restoration, x_T, guided.time_grid(int(cfg.steps)), gens)
    wall = time.perf_counter() - start
    world = dist.get_world_size() if dist.is_initialized() else 1
    metrics = {
        "processes": world,
        "rows_per_process": [len(range(len(x))[shard(len(x), r, world)]) for r in range(world)],
        "psnr": float(psnr(x.clamp(-1, 1), truth).mean()),
        "wall_s": wall,
    }
    if not dist.is_initialized() or dist.get_rank() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(out_dir / "restored.pt", lambda tmp: torch.save(x, tmp))
        write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


@hydra.main(version_base=None, config_path="../configs/distributed", config_name="distributed")
def main(cfg: DictConfig) -> None:
    """Joins the process group that ``torchrun`` describes (gloo on CPU), if any."""
    run_dir = prepare_run(cfg)  # unknown keys, wrong kinds of values, the run folder
    launched = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if launched:
        dist.init_process_group(str(cfg.backend))
    try:
        out = Path(cfg.out_dir) if cfg.out_dir else run_dir
        # every rank samples its shard, so a finished run is redone rather than resumed
        metrics = run(cfg, out)
        if not dist.is_initialized() or dist.get_rank() == 0:
            finish(log, out, markdown_table([metrics]))
    finally:
        if launched:
            dist.destroy_process_group()


if __name__ == "__main__":
    launch(main)
