r"""A held-out photograph at 512x512: one fully convolutional pass against blended tiles.

    python -m experiments.benchmarks.large_image
    python -m experiments.benchmarks.large_image --task random50 --tiles 256 128 --steps 50
    python -m experiments.benchmarks.large_image --method pigdm --batch 1

The astronaut's luma (held out from the natural prior's training) at 512x512 is measured
once (``sr4``: 4x average-pooling super-resolution, or ``random50``: half the pixels, with
:math:`\sigma_y = 0.01`) and restored with the shipped natural prior through
:class:`priors.Tiled`, in one pass and with each tile side given (``--batch`` tiles per
network call), by DDRM (network evaluations only) or PiGDM with ancestral steps (a
vector-Jacobian product through the network at every step, so the activations of a whole
forward pass are kept for the backward one, per batch of tiles: see
:mod:`priors.tiling`). Each setting runs in its own process, so its peak resident memory
(``ru_maxrss``) is its own. Prints a table: PSNR,
wall time, peak memory, the largest difference from the one-pass restoration (same seed, so
the same noise), and the RMSE against the truth in a band of 4 pixels around the inner tile
borders next to the one pass's RMSE in the same band (no seam: the two agree). Plain
script, no Hydra.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

from pathlib import Path

import torch

import guided
import operators
import priors

from experiments.shared.metrics import psnr
from experiments.shared.photographs import photograph
from experiments.shared.tasks import from_catalogue
from priors.tiling import tile_starts

OVERLAP = 32


def truth() -> torch.Tensor:
    """The astronaut's luma, 512x512, in [-1, 1]."""
    return (photograph("astronaut")[None].double() * 2 - 1)[..., :512, :512]


def operator(task: str) -> operators.Operator:
    """Task ``task`` (sr4 or random50, the tasks this benchmark measures) of the task
    catalogue."""
    if task not in ("sr4", "random50"):
        raise ValueError(f"task must be sr4 or random50, got {task!r}")
    return from_catalogue(task, (1, 512, 512))


METHODS = ("ddrm", "pigdm")


def restore_once(
    task: str, method: str, tile: int | None, batch: int, steps: int, threads: int
) -> dict[str, object]:
    """One restoration in this process; returns its scores, time and the image."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    torch.set_num_threads(threads)
    x, op = truth(), operator(task)
    g = torch.Generator().manual_seed(0)
    y = operators.GaussianNoise(0.01)(op(x), g)
    prior = priors.Tiled(priors.load("natural"), tile=tile, overlap=OVERLAP, batch=batch)
    x_T = guided.initial_noise(prior.schedule, (1, 1, 512, 512), g)
    ts = guided.time_grid(steps)
    start = time.perf_counter()
    if method == "ddrm":
        out = guided.DDRM(op, y, 0.01)(prior, x_T, ts, generator=g)
    else:
        denoiser = guided.GuidedDenoiser(prior, guided.PiGDM(op, y, 0.01))
        out = guided.DDPM()(denoiser, x_T, ts, generator=g)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    return {"psnr": float(psnr(out, x)), "wall_s": wall, "peak_mb": peak_mb, "image": out}


def band(tile: int) -> torch.Tensor:
    """Pixels within 4 of an inner tile border."""
    starts = tile_starts(512, tile, OVERLAP)
    edges = {s for s in starts if s > 0} | {s + tile for s in starts if s + tile < 512}
    mask = torch.zeros(512, 512, dtype=torch.bool)
    for e in edges:
        mask[e - 4 : e + 4, :] = True
        mask[:, e - 4 : e + 4] = True
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sr4", choices=["sr4", "random50"])
    parser.add_argument("--method", default="ddrm", choices=list(METHODS))
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--batch", type=int, default=16, help="tiles per network call")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch < 1:
        parser.error(f"--batch must be a positive number of tiles, got {args.batch}")
    if args.out is not None:  # a child: one setting (0 = one pass)
        result = restore_once(args.task, args.method, args.one or None, args.batch,
                              args.steps, args.threads)  # fmt: skip
        torch.save(result, args.out)
        return
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for tile in [0, *args.tiles]:
            path = str(Path(folder) / f"{tile}.pt")
            command = [sys.executable, "-m", "experiments.benchmarks.large_image",
                       "--task", args.task, "--method", args.method, "--batch",
                       str(args.batch), "--steps", str(args.steps), "--threads",
                       str(args.threads), "--one", str(tile), "--out", path]  # fmt: skip
            subprocess.run(command, check=True)
            results[tile] = torch.load(path, weights_only=True)
    x, one = truth(), results[0]["image"]
    print(f"astronaut 512x512, {args.task}, sigma_y 0.01, {args.method} {args.steps} steps, "
          f"{args.threads} threads, overlap {OVERLAP}, {args.batch} tiles per call")  # fmt: skip
    print(
        "| tiles | PSNR | wall s | peak MB | max diff to one pass | band RMSE tiled / one pass |"
    )
    print("|---|---|---|---|---|---|")
    for tile, r in results.items():
        if tile == 0:
            print(
                f"| one pass | {r['psnr']:.2f} | {r['wall_s']:.1f} | {r['peak_mb']:.0f} | - | - |"
            )
            continue
        mask = band(tile)
        rmse = [float((z - x)[..., mask].pow(2).mean().sqrt()) for z in (r["image"], one)]
        diff = float((r["image"] - one).abs().max())
        print(f"| {tile} | {r['psnr']:.2f} | {r['wall_s']:.1f} | {r['peak_mb']:.0f} | "
              f"{diff:.4f} | {rmse[0]:.4f} / {rmse[1]:.4f} |")  # fmt: skip
    print(
        json.dumps(
            {str(k): {m: v for m, v in r.items() if m != "image"} for k, r in results.items()}
        )
    )


if __name__ == "__main__":
    main()
