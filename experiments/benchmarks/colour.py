r"""A grey prior on colour photographs: channel by channel against luminance and chrominance.

    python -m experiments.benchmarks.colour
    python -m experiments.benchmarks.colour --crops 6 --steps 50 --tasks sr4 random50

Colour crops of the held-out photographs (astronaut, coffee, china; 128x128, evenly spaced
over each photograph's grid) are measured once per task with :math:`\sigma_y = 0.01`
(``sr4``: 4x average pooling, ``random50``: half the pixels, the same mask in the three
channels) and restored by DDRM (``--steps`` steps, one sample) with the shipped natural
prior through :class:`priors.PerChannel` and :class:`priors.LumaChroma`, from the same
noise; the classical fill (bicubic / linear interpolation) is the floor. Prints the mean
PSNR (on RGB) per task, and the paired difference luma_chroma - per_channel with its 95%
interval over crops. Plain script, no Hydra.
"""

from __future__ import annotations

import argparse

import torch

import guided
import operators
import priors

from experiments.shared.fills import interpolate
from experiments.shared.metrics import paired, psnr
from experiments.shared.photographs import HELD_OUT, evenly_spaced, grid_crops, photograph
from experiments.shared.tasks import from_catalogue

WRAPPERS = {"per_channel": priors.PerChannel, "luma_chroma": priors.LumaChroma}


def colour_crops(per_photograph: int, side: int = 128) -> torch.Tensor:
    """``per_photograph`` colour crops of each held-out photograph, in [-1, 1]."""
    crops = [grid_crops(photograph(p.name, colour=True).double() * 2 - 1, side) for p in HELD_OUT]
    return torch.cat([evenly_spaced(c, per_photograph, "crops") for c in crops])


def operator(task: str, shape: tuple[int, int, int]) -> operators.Operator:
    """Task ``task`` (sr4 or random50, the tasks this benchmark measures) of the task
    catalogue."""
    if task not in ("sr4", "random50"):
        raise ValueError(f"task must be sr4 or random50, got {task!r}")
    return from_catalogue(task, shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=2, help="crops per photograph")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--tasks", nargs="+", default=["sr4", "random50"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = colour_crops(args.crops)
    grey = priors.Tiled(priors.load("natural"))
    print(f"{len(x)} colour crops of 128x128 (held out), sigma_y 0.01, DDRM {args.steps} steps")
    print("| task | fill | per_channel | luma_chroma | luma_chroma - per_channel (95%) |")
    print("|---|---|---|---|---|")
    for salt, task in enumerate(args.tasks):
        op = operator(task, tuple(x.shape[1:]))
        g = torch.Generator().manual_seed(salt)
        y = operators.GaussianNoise(0.01)(op(x), g)
        scores = {"fill": psnr(interpolate(op, y, 0.01), x)}
        for name, wrapper in WRAPPERS.items():
            g = torch.Generator().manual_seed(100 + salt)
            x_T = guided.initial_noise(grey.schedule, tuple(x.shape), g)
            out = guided.DDRM(op, y, 0.01)(wrapper(grey), x_T, guided.time_grid(args.steps),
                                           generator=g)  # fmt: skip
            scores[name] = psnr(out, x)
        gain, half = paired(scores["luma_chroma"], scores["per_channel"])
        cells = " | ".join(f"{float(scores[k].mean()):.2f}" for k in ("fill", *WRAPPERS))
        print(f"| {task} | {cells} | {gain:+.2f} ± {half:.2f} |")


if __name__ == "__main__":
    main()
