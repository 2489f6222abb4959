r"""A held-out photograph at 512x512: one fully convolutional pass against blended tiles.

    python -m experiments.benchmarks.large_image
    python -m experiments.benchmarks.large_image --task random50 --tiles 256 128 --steps 50

The astronaut's luma (held out from the natural prior's training) at 512x512 is measured
once (``sr4``: 4x average-pooling super-resolution, or ``random50``: half the pixels, with
:math:`\sigma_y = 0.01`) and restored by DDRM with the shipped natural prior through
:class:`priors.Tiled`, in one pass and with each tile side given. Each setting runs in its
own process, so its peak resident memory (``ru_maxrss``) is its own. Prints a table: PSNR,
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
import time

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


def restore_once(task: str, tile: int | None, steps: int, threads: int) -> dict[str, object]:
    """One restoration in this process; returns its scores, time and the image."""
    torch.set_num_threads(threads)
    x, op = truth(), operator(task)
    g = torch.Generator().manual_seed(0)
    y = operators.GaussianNoise(0.01)(op(x), g)
    prior = priors.Tiled(priors.load("natural"), tile=tile, overlap=OVERLAP)
    x_T = guided.initial_noise(prior.schedule, (1, 1, 512, 512), g)
    start = time.perf_counter()
    out = guided.DDRM(op, y, 0.01)(prior, x_T, guided.time_grid(steps), generator=g)
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
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out is not None:  # a child: one setting (0 = one pass)
        result = restore_once(args.task, args.one or None, args.steps, args.threads)
        torch.save(result, args.out)
        return
    results = {}
    for tile in [0, *args.tiles]:
        path = f"/tmp/large_image_{args.task}_{tile}.pt"
        command = [sys.executable, "-m", "experiments.benchmarks.large_image",
                   "--task", args.task, "--steps", str(args.steps), "--threads",
                   str(args.threads), "--one", str(tile), "--out", path]  # fmt: skip
        subprocess.run(command, check=True)
        results[tile] = torch.load(path, weights_only=True)
    x, one = truth(), results[0]["image"]
    print(f"astronaut 512x512, {args.task}, sigma_y 0.01, DDRM {args.steps} steps, "
          f"{args.threads} threads, overlap {OVERLAP}")  # fmt: skip
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
