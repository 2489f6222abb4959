r"""How each method of the RL app acts: one entry per method in :data:`METHODS`.

- ``bc``: the prior alone (diffusion behaviour cloning);
- ``gaussian_bc``: the Gaussian policy's mean;
- ``value``: :class:`guided.ValueGuidance` through the denoised action, scale :math:`\beta`
  (:math:`\pi \propto \mu \exp(\beta Q)`);
- ``noisy_value``: :class:`guided.NoisyValueGuidance` with the noise-aware critic, scale
  :math:`\beta`;
- ``energy``: :class:`guided.NoisyValueGuidance` with QGPO's contrastive energy, trained
  for :math:`\mu \exp(\beta_E Q)` (scale 1 is that target; others multiply the energy);
- ``safe_energy``: the energy of :math:`\mu \exp(\beta_E Q)\, p(\text{safe})` at scale 1
  plus safety guidance :math:`w \nabla \log p(\text{safe} \mid s, a_t)`, scale :math:`w`;
- ``return_cfg``: classifier-free guidance of the return-conditioned policy at the target
  return, scale the CFG weight :math:`w` (0: unconditional, 1: conditional);
- ``select``: the best of ``candidates`` prior samples by :math:`Q` (IDQL-style);
- ``value_select``: value guidance, then the best of ``candidates`` by :math:`Q`.

Each method says what its scale means (:attr:`Method.scale`), so reports never put a CFG
weight and a value-guidance :math:`\beta` on one axis. Actions are drawn by DDPM with the
settings' steps, clipped to the data's bounds :math:`[-1, 1]`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torch import Tensor

import guided
import priors

from experiments.rl.envs import Policy
from experiments.rl.settings import Settings
from experiments.rl.training import Trained

__all__ = ["METHODS", "Method", "act", "as_policy", "gradients", "needs", "sample_actions"]

#: Builds (denoiser, conditions) from the networks, the state rows, the scale and settings.
Build = Callable[[Trained, Tensor, float, Settings], tuple[priors.Denoiser, dict[str, Any]]]


@dataclass(frozen=True)
class Method:
    """One way to act. ``scale`` names what the method's scale is (``None``: no scale,
    the method runs once); ``networks`` are the optional networks it needs besides the
    prior and the critic; ``differentiates``: it needs autograd while sampling;
    ``selects``: best of ``candidates`` by :math:`Q` after sampling; ``build`` makes the
    denoiser to sample (``None``: the method does not sample, see :func:`sample_actions`)."""

    name: str
    scale: str | None
    networks: tuple[str, ...] = ()
    differentiates: bool = False
    selects: bool = False
    build: Build | None = None


def _prior(n: Trained, rows: Tensor, scale: float, s: Settings) -> tuple[priors.Denoiser, dict]:
    return n.prior, {"state": rows}


def _value(n: Trained, rows: Tensor, scale: float, s: Settings) -> tuple[priors.Denoiser, dict]:
    return guided.GuidedDenoiser(n.prior, guided.ValueGuidance(n.q, rows, scale)), {"state": rows}


def _noisy(key: str) -> Build:
    def build(n: Trained, rows: Tensor, scale: float, s: Settings) -> tuple[priors.Denoiser, dict]:
        term = guided.NoisyValueGuidance(getattr(n, key), rows, scale)
        return guided.GuidedDenoiser(n.prior, term), {"state": rows}

    return build


def _safe(n: Trained, rows: Tensor, scale: float, s: Settings) -> tuple[priors.Denoiser, dict]:
    terms = (
        guided.NoisyValueGuidance(n.safe_energy, rows, 1.0),
        guided.NoisyValueGuidance(n.safety, rows, scale),
    )
    return guided.GuidedDenoiser(n.prior, *terms), {"state": rows}


def _returns(n: Trained, rows: Tensor, scale: float, s: Settings) -> tuple[priors.Denoiser, dict]:
    denoiser = guided.ClassifierFree(n.returns, scale, key="ret", null={"ret": float("nan")})
    return denoiser, {"state": rows, "ret": torch.full((len(rows), 1), s.returns.target)}


BETA = "value-guidance scale β"
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("bc", None, build=_prior),
        Method("gaussian_bc", None, ("gaussian",)),
        Method("value", BETA, differentiates=True, build=_value),
        Method("noisy_value", BETA, ("noisy",), True, build=_noisy("noisy")),
        Method("energy", "energy scale", ("energy",), True, build=_noisy("energy")),
        Method("safe_energy", "safety weight w", ("safety", "safe_energy"), True, build=_safe),
        Method("return_cfg", "CFG weight w", ("returns",), build=_returns),
        Method("select", None, selects=True, build=_prior),
        Method("value_select", BETA, (), True, True, build=_value),
    )
}


def _method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {list(METHODS)}")
    return METHODS[name]


def needs(methods: list[str] | tuple[str, ...]) -> set[str]:
    """The optional networks ``methods`` need (see :func:`experiments.rl.training.train_all`)."""
    return {k for m in methods for k in _method(m).networks}


def gradients(method: str) -> AbstractContextManager[Any]:
    """Autograd on for the methods that differentiate (guidance), off for the others."""
    return nullcontext() if _method(method).differentiates else torch.no_grad()


def sample_actions(
    settings: Settings, method: str, scale: float, trained: Trained, states: Tensor, seed: int
) -> Tensor:
    """Actions :math:`(B, A)` for states :math:`(B, S)` by ``method`` at ``scale``, from the
    generator seeded by ``seed`` (clipped to the bounds [-1, 1] of the training data)."""
    m = _method(method)
    missing = [k for k in m.networks if getattr(trained, k) is None]
    if missing:
        raise ValueError(f"method {method!r} needs the networks {missing}, which were not trained")
    if m.build is None:  # the Gaussian baseline acts with its mean
        return trained.gaussian.act(states)
    n = settings.candidates if m.selects else 1
    rows = states.repeat_interleave(n, 0)
    g = torch.Generator().manual_seed(seed)
    denoiser, cond = m.build(trained, rows, float(scale), settings)
    base = trained.returns if method == "return_cfg" else trained.prior
    x_T = guided.initial_noise(base.schedule, (len(rows), *base.shape), g)
    ts = guided.time_grid(settings.steps)
    actions = guided.DDPM()(denoiser, x_T, ts, generator=g, **cond).clamp(-1, 1)
    if n == 1:
        return actions
    scores = trained.q(rows, actions).view(-1, n)
    best = scores.argmax(1) + n * torch.arange(len(states))
    return actions[best]


def act(
    settings: Settings, method: str, scale: float, trained: Trained, states: Tensor, seed: int
) -> Tensor:
    """:func:`sample_actions` with autograd on exactly when the method needs it, detached."""
    with gradients(method):
        return sample_actions(settings, method, scale, trained, states, seed).detach()


def as_policy(
    settings: Settings,
    method: str,
    scale: float,
    trained: Trained,
    observe: Callable[[np.ndarray], np.ndarray] = np.asarray,
) -> Policy:
    """The policy observations -> actions of ``method`` (numpy), fresh noise at every call
    (seeded by the settings' seed and the call's index); ``observe`` maps observations to the
    states the networks were trained on."""
    calls = iter(range(2**62))

    def policy(obs: np.ndarray) -> np.ndarray:
        states = torch.from_numpy(np.asarray(observe(obs), np.float32))
        seed = 7919 * settings.seed + next(calls)
        return act(settings, method, scale, trained, states, seed).numpy()

    return policy
