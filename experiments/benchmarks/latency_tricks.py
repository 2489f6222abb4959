"""The latency mechanisms of the small policy networks, each switched off in turn, in one run.

    python -m experiments.benchmarks.latency_tricks                       # the bandit's sizes
    python -m experiments.benchmarks.latency_tricks --state-dim 3 --width 128   # Pendulum's

The workload is the RL app's latency measurement: actions for 256 states, 10 DDPM steps, one
CPU thread, a state-conditioned :class:`priors.MLPDenoiser` (2 blocks) and critics of depth
2 (untrained: the cost does not depend on the weights), for behaviour cloning, value
guidance through the denoised action and a noise-aware critic. Each mechanism is switched
off by replacing it with the plain computation it stands for, and timed in alternation with
everything on (``--repeats`` pairs, a warm-up call before each); the script prints the
medians and ``off / on`` (above 1: the mechanism saves time). The package keeps a mechanism
only where it saves at least 10% on one of these workloads; its docstring quotes the
figures. Plain script, no Hydra: it has no configuration to record.
"""

from __future__ import annotations

import argparse
import statistics
import time

from collections.abc import Callable
from typing import Any

import torch

import guided
import priors
import priors.critic
import priors.mlp


def _plain_layers(layers: Any, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def _no_memory(key: Any, source: Any, compute: Callable[[], torch.Tensor], *_: Any) -> Any:
    return compute()


def _autograd_value_and_grad(
    self: priors.Critic,
    state: torch.Tensor,
    action: torch.Tensor,
    t: Any = None,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        a = action.detach().requires_grad_(True)
        value = self(state, a, t)
        (grad,) = torch.autograd.grad(value, a, torch.full_like(value, scale))
    return value.detach(), grad


#: Each mechanism: (module, attribute, the plain replacement).
MECHANISMS = {
    "run_layers": [
        (priors.mlp, "run_layers", _plain_layers),
        (priors.critic, "run_layers", _plain_layers),
    ],
    "fixed_conditions": [(priors.mlp, "remember", _no_memory)],
    "critic_backward": [(priors.critic.Critic, "value_and_grad", _autograd_value_and_grad)],
}


def _switched_off(names: list[str]) -> Callable[[], None]:
    """Switches the named mechanisms off; returns the function that switches them back."""
    saved = [(o, a, getattr(o, a)) for n in names for o, a, _ in MECHANISMS[n]]
    for n in names:
        for owner, attribute, plain in MECHANISMS[n]:
            setattr(owner, attribute, plain)

    def restore() -> None:
        for owner, attribute, value in saved:
            setattr(owner, attribute, value)

    return restore


def workload(state_dim: int, width: int) -> dict[str, Callable[[], torch.Tensor]]:
    """The three ways to act, each a call that samples 256 actions."""
    policy = priors.MLPDenoiser(
        priors.MLP(2, width=width, blocks=2, conditions={"state": state_dim}),
        priors.CosineSchedule(),
    ).requires_grad_(False)
    q = priors.Critic(state_dim, 2, width=width, depth=2).requires_grad_(False)
    noisy = priors.Critic(state_dim, 2, width=width, depth=2, schedule=policy.schedule)
    noisy.requires_grad_(False)
    states = torch.randn(256, state_dim, generator=torch.Generator().manual_seed(0))
    ts = guided.time_grid(10)

    def act(denoiser: priors.Denoiser) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            g = torch.Generator().manual_seed(1)
            x_T = guided.initial_noise(policy.schedule, (256, 2), g)
            return guided.DDPM()(denoiser, x_T, ts, generator=g, state=states)

        return run

    bc = act(policy)
    return {
        "bc": lambda: torch.no_grad()(bc)(),
        "value": act(guided.GuidedDenoiser(policy, guided.ValueGuidance(q, states, 1.0))),
        "noisy_value": act(
            guided.GuidedDenoiser(policy, guided.NoisyValueGuidance(noisy, states, 1.0))
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--state-dim", type=int, default=1)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = workload(args.state_dim, args.width)
    print(f"state dim {args.state_dim}, width {args.width}: median ms, off / on")
    for method, run in runs.items():
        for name in [*MECHANISMS, "all"]:
            names = list(MECHANISMS) if name == "all" else [name]
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats):
                for on in (True, False):
                    restore = (lambda: None) if on else _switched_off(names)
                    try:
                        run()
                        start = time.perf_counter()
                        run()
                        times[on].append(time.perf_counter() - start)
                    finally:
                        restore()
            on_ms, off_ms = (1000 * statistics.median(times[k]) for k in (True, False))
            print(
                f"{method:12s} {name:17s} on {on_ms:6.2f}  off {off_ms:6.2f}  {off_ms / on_ms:.3f}"
            )


if __name__ == "__main__":
    main()
