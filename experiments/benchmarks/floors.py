"""The floors the side-by-side benchmark measures guided sampling against: ``steps``
network evaluations with one vector-Jacobian product each (what any gradient-guided step
must pay), and classifier-free guidance batched against two separate passes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from omegaconf import DictConfig

import guided
import priors

from experiments.shared.timing import timed

__all__ = ["TwoPassCFG", "cfg_floor", "vjp_floor"]


def vjp_floor(
    cfg: DictConfig, prior: priors.Denoiser, shape: tuple[int, ...], steps: int
) -> Callable[[], None]:
    """``steps`` network evaluations with one VJP each on a batch of shape ``shape``."""
    g = torch.Generator().manual_seed(int(cfg.seed))
    x = torch.randn(*shape, generator=g)
    v = torch.randn(*shape, generator=g)

    def run() -> None:
        for t in guided.time_grid(steps)[:-1]:
            x_t = x.detach().requires_grad_(True)
            torch.autograd.grad(prior(x_t, t), x_t, v)

    return run


class TwoPassCFG(priors.Wrapper):
    """Classifier-free guidance with the conditional and unconditional predictions in two
    separate network calls (the common hand-written loop); the reference for the batched
    :class:`guided.ClassifierFree`."""

    def __init__(self, prior: priors.Denoiser, scale: float) -> None:
        super().__init__(prior)
        self.scale = scale

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        conditional = self.prior(x_t, t, label=label)
        unconditional = self.prior(x_t, t, label=torch.full_like(label, -1))
        return unconditional + self.scale * (conditional - unconditional)


def cfg_floor(cfg: DictConfig, prior: priors.Denoiser, rows: int, steps: int) -> dict[str, float]:
    """Wall times of CFG sampling over ``steps`` steps, batched and in two passes, and their
    largest difference (the two must agree)."""
    labels = torch.arange(rows) % max(int(getattr(prior, "num_classes", 0)), 1)
    ts = guided.time_grid(steps)
    outs, walls = {}, {}
    for name, denoiser in (
        ("batched", guided.ClassifierFree(prior, float(cfg.cfg_scale))),
        ("two_pass", TwoPassCFG(prior, float(cfg.cfg_scale))),
    ):
        g = torch.Generator().manual_seed(int(cfg.seed))
        x_T = guided.initial_noise(prior.schedule, (rows, *prior.shape), g)

        def run(denoiser: priors.Denoiser = denoiser, x_T: torch.Tensor = x_T) -> Any:
            g = torch.Generator().manual_seed(int(cfg.seed) + 1)
            return guided.DDIM()(denoiser, x_T, ts, generator=g, label=labels)

        outs[name], walls[name] = timed(run, int(cfg.repeats))
    return {
        "batched_s": walls["batched"],
        "two_pass_s": walls["two_pass"],
        "ratio": walls["batched"] / walls["two_pass"],
        "max_difference": float((outs["batched"] - outs["two_pass"]).abs().max()),
    }
