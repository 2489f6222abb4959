r"""Diffusion policies steered by value guidance, on offline data built in-project.

    python -m experiments.rl                         # the four-mode bandit
    python -m experiments.rl task=unsafe_bandit      # safety guidance
    python -m experiments.rl task=pendulum_mixed     # Pendulum-v1, 3 seeds in gymnasium
    python -m experiments.rl task=reacher_mixed      # MuJoCo Reacher-v5, 3 seeds
    python -m experiments.rl task=cheetah_mixed      # MuJoCo HalfCheetah-v5 (ARS data)
    python -m experiments.rl 'scales=[0,1,3,10]' candidates=16

``task`` picks a config of ``configs/rl/task`` (the data set and the settings tuned for it).

The action prior is a state-conditioned :class:`priors.MLPDenoiser` trained by behaviour
cloning on the data set (:mod:`experiments.offline`); the critic :math:`Q(s, a)` is learned
offline by implicit Q-learning (Kostrikov et al., 2022: expectile regression of
:math:`V(s)` on :math:`Q`, then :math:`Q(s, a) \leftarrow r + \gamma (1 - d) V(s')`); a
noise-aware critic :math:`Q_\phi(s, a_t, t)` regresses the critic's value of the data
action from noisy actions. Actions are sampled for ``samples`` states by DDPM with
``steps`` steps, per method:

- ``bc``: the prior alone (diffusion behaviour cloning);
- ``gaussian_bc``: a Gaussian policy trained by maximum likelihood, acting with its mean;
- ``value``: :class:`guided.ValueGuidance` (through the denoised action), per scale;
- ``noisy_value``: :class:`guided.NoisyValueGuidance` (noise-aware critic), per scale;
- ``energy``: :class:`guided.NoisyValueGuidance` with QGPO's contrastive energy
  :math:`f_\phi(s, a_t, t)` (Lu et al., 2023), trained so that its gradient is the exact
  guidance of :math:`\pi \propto \mu \exp(\beta Q)` at ``energy.beta`` (scale 1 is that
  target; other scales multiply the energy);
- ``safe_energy``: guidance towards :math:`\mu \exp(\beta Q)\, p(\text{safe})` at scale
  1, plus safety guidance per scale. A noise-aware classifier of safe actions
  :math:`p(\text{safe} \mid s, a_t, t)` (:class:`priors.Critic` with
  ``output="log_prob"``, cross-entropy on the data's costs over noisy actions) gives both
  the safety term (:class:`guided.NoisyValueGuidance` on its log-probability) and, at
  :math:`t = 0`, the factor :math:`p(\text{safe})` in the contrastive energy's targets
  (the intermediate energies of a product do not add, so the energy is trained for the
  constrained target itself);
- ``return_cfg``: return-conditioned classifier-free guidance (Decision Diffuser, Ajay et
  al., 2023): a second policy conditioned on the state and the normalised future reward
  :math:`R \in [0, 1]` (the data's ``future_rewards`` mapped by their range; dropped with
  probability ``returns.dropout`` in training) samples with :class:`guided.ClassifierFree`
  at :math:`R =` ``returns.target``; the scale is the CFG weight (0: unconditional, 1:
  conditional, above: extrapolated);
- ``select``: best of ``candidates`` prior samples by :math:`Q` (IDQL-style selection);
- ``value_select``: value guidance, then the best of ``candidates`` by :math:`Q`.

Environments (``pendulum_*``, ``reacher_*``, ``cheetah_*``): every method is trained for
each seed of ``seeds`` and evaluated on ``episodes`` gymnasium episodes (one batch through
the sampler per step; with ``normalise_states`` the networks see states standardised by the
data's statistics); the table gives the normalised score
:math:`100 (R - R_{random}) / (R_{expert} - R_{random})` (references from the data's
card), mean and standard deviation over seeds, and ``scores.png`` the score against the
scale.

Bandit scores (exact, from the data's modes): the expected reward of the actions (the mean
reward of the nearest mode; an action farther than 0.2 from every mode is
out-of-distribution and earns that mode's reward all the same, so the OOD rate is reported
beside it), the share of actions in the best safe mode, the OOD rate, the violation rate
(actions in the unsafe region of ``unsafe_bandit``) and the mode histogram.
Latency: the wall time to sample actions for ``latency.states`` states in one batch with
``latency.steps`` DDPM steps on ``latency.threads`` CPU threads (one is faster than two
for such small networks) (median of ``latency.repeats``; the first call is a warm-up),
for the prior alone, each guided method at scale 1 and guidance with selection. Writes
``metrics.json``, ``table.md``, ``scales.png`` (reward and OOD rate vs. scale) and
``actions.png`` (BC, guided and selected actions over the data).

References:
    | Offline Reinforcement Learning with Implicit Q-Learning (Kostrikov et al., 2022)
    | https://arxiv.org/abs/2110.06169
    | IDQL: Implicit Q-Learning as an Actor-Critic Method with Diffusion Policies
    | (Hansen-Estruch et al., 2023) https://arxiv.org/abs/2304.10573
    | Is Conditional Generative Modeling all you need for Decision-Making? (Ajay et al.,
    | 2023) https://arxiv.org/abs/2211.15657
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import hydra
import matplotlib
import numpy as np
import torch

from omegaconf import DictConfig
from torch import Tensor, nn

import guided
import priors

from experiments import envs, offline
from experiments.runs import launch, prepare_run, resumable, write_metrics
from experiments.timing import timed
from experiments.train import diffuse

matplotlib.use("Agg")

import matplotlib.pyplot as plt

METHODS = (
    "bc", "gaussian_bc", "value", "noisy_value", "energy", "safe_energy", "return_cfg",
    "select", "value_select",
)  # fmt: skip
#: Methods swept over the scale.
GUIDED = ("value", "noisy_value", "energy", "safe_energy", "return_cfg", "value_select")
#: Methods that differentiate while sampling.
DIFFERENTIATING = ("value", "noisy_value", "energy", "safe_energy", "value_select")


def _check(cfg: DictConfig) -> None:
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; available: {list(METHODS)}")
    if cfg.dataset not in offline.BUILDERS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; available: {sorted(offline.BUILDERS)}")
    if not cfg.seeds:
        raise ValueError("seeds must list at least one training seed")
    for key in ("samples", "steps", "candidates", "episodes"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    if any(float(s) < 0 for s in cfg.scales):
        raise ValueError(f"scales must be >= 0, got {list(cfg.scales)}")
    if not 0 < float(cfg.critic.expectile) < 1:
        raise ValueError(f"critic.expectile must lie in (0, 1), got {cfg.critic.expectile}")
    if not 0 < float(cfg.returns.dropout) < 1:
        raise ValueError(f"returns.dropout must lie in (0, 1), got {cfg.returns.dropout}")
    if not 0 <= float(cfg.returns.target) <= 1:
        raise ValueError(f"returns.target must lie in [0, 1], got {cfg.returns.target}")


def _batches(n: int, size: int, steps: int, g: torch.Generator) -> Iterator[Tensor]:
    for _ in range(steps):
        yield torch.randint(0, n, (size,), generator=g)


def normalised_returns(data: offline.OfflineData) -> Tensor:
    """The data's future rewards mapped to [0, 1] by their range, :math:`(N, 1)`."""
    future = torch.from_numpy(data.future_rewards)[:, None]
    low, high = future.min(), future.max()
    return (future - low) / (high - low).clamp_min(1e-8)


def train_policy(
    cfg: DictConfig, data: offline.OfflineData, returns: bool = False
) -> priors.MLPDenoiser:
    """Diffusion behaviour cloning: the v-prediction loss of actions given states (and, with
    ``returns``, given the normalised future reward, dropped with probability
    ``returns.dropout``)."""
    node = cfg.policy
    torch.manual_seed(int(cfg.seed) + (12 if returns else 0))  # the initialisation only
    conditions = {"state": data.state_dim} | ({"ret": 1} if returns else {})
    net = priors.MLP(
        data.action_dim, width=int(node.width), blocks=int(node.blocks), conditions=conditions,
        optional=["ret"] if returns else [],
    )  # fmt: skip
    prior = priors.MLPDenoiser(net, priors.CosineSchedule())
    states, actions = torch.from_numpy(data.states), torch.from_numpy(data.actions)
    future = normalised_returns(data) if returns else None
    dropout = float(cfg.returns.dropout) if returns else 0.0
    optimiser = torch.optim.Adam(prior.parameters(), lr=float(node.lr))
    g = torch.Generator().manual_seed(int(cfg.seed) + (13 if returns else 1))
    for rows in _batches(len(states), int(node.batch), int(node.steps), g):
        optimiser.zero_grad()
        cond = {"state": states[rows]} | ({} if future is None else {"ret": future[rows]})
        prior.loss(actions[rows], g, dropout=dropout, **cond).backward()
        optimiser.step()
    return prior.requires_grad_(False).eval()


class GaussianPolicy(nn.Module):
    r"""The Gaussian behaviour-cloning baseline: an MLP :math:`s \mapsto (\mu(s), \log
    \sigma(s))` trained by maximum likelihood; it acts with its mean (clipped to the
    bounds)."""

    def __init__(self, state_dim: int, action_dim: int, width: int = 256) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.net = nn.Sequential(
            nn.Linear(state_dim, width), nn.Mish(), nn.Linear(width, width), nn.Mish(),
            nn.Linear(width, 2 * action_dim),
        )  # fmt: skip

    def forward(self, state: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.net(state).split(self.action_dim, 1)
        return mean, log_std.clamp(-5, 2)

    def nll(self, state: Tensor, action: Tensor) -> Tensor:
        mean, log_std = self(state)
        return (0.5 * ((action - mean) / log_std.exp()).square() + log_std).sum(1).mean()


def train_gaussian(cfg: DictConfig, data: offline.OfflineData) -> GaussianPolicy:
    node = cfg.policy
    torch.manual_seed(int(cfg.seed) + 10)
    policy = GaussianPolicy(data.state_dim, data.action_dim, int(cfg.critic.width))
    states, actions = torch.from_numpy(data.states), torch.from_numpy(data.actions)
    optimiser = torch.optim.Adam(policy.parameters(), lr=float(node.lr))
    g = torch.Generator().manual_seed(int(cfg.seed) + 11)
    for rows in _batches(len(states), int(node.batch), int(node.steps), g):
        optimiser.zero_grad()
        policy.nll(states[rows], actions[rows]).backward()
        optimiser.step()
    return policy.requires_grad_(False).eval()


def expectile_loss(diff: Tensor, tau: float) -> Tensor:
    r"""IQL's :math:`L_2^\tau(u) = |\tau - 1(u < 0)|\, u^2`, averaged."""
    weight = torch.where(diff < 0, 1 - tau, tau)
    return (weight * diff.square()).mean()


def train_critic(cfg: DictConfig, data: offline.OfflineData) -> priors.Critic:
    """Implicit Q-learning (expectile value, TD critic with a Polyak target), on rewards
    multiplied by ``critic.reward_scale``."""
    node = cfg.critic
    torch.manual_seed(int(cfg.seed) + 2)
    s_dim, a_dim = data.state_dim, data.action_dim
    q = priors.Critic(s_dim, a_dim, width=int(node.width), depth=int(node.depth))
    v = priors.Critic(s_dim, 0, width=int(node.width), depth=int(node.depth))
    target = copy.deepcopy(q).requires_grad_(False)
    arrays = [torch.from_numpy(getattr(data, k)) for k in offline.FIELDS[:5]]
    states, actions, rewards, next_states, terminals = arrays
    opt_q = torch.optim.Adam(q.parameters(), lr=float(node.lr))
    opt_v = torch.optim.Adam(v.parameters(), lr=float(node.lr))
    gamma, tau, polyak = float(node.discount), float(node.expectile), float(node.polyak)
    g = torch.Generator().manual_seed(int(cfg.seed) + 3)
    for rows in _batches(len(states), int(node.batch), int(node.steps), g):
        s, a = states[rows], actions[rows]
        with torch.no_grad():
            q_target = target(s, a)
        opt_v.zero_grad()
        expectile_loss(q_target - v(s), tau).backward()
        opt_v.step()
        with torch.no_grad():
            reward = float(node.reward_scale) * rewards[rows]
            backup = reward + gamma * (1 - terminals[rows]) * v(next_states[rows])
        opt_q.zero_grad()
        (q(s, a) - backup).square().mean().backward()
        opt_q.step()
        with torch.no_grad():
            for p, p_target in zip(q.parameters(), target.parameters(), strict=True):
                p_target.lerp_(p, 1 - polyak)
    return q.requires_grad_(False).eval()


def train_noisy_critic(
    cfg: DictConfig, data: offline.OfflineData, critic: priors.Critic, schedule: priors.Schedule
) -> priors.Critic:
    r"""A noise-aware critic: regresses :math:`Q(s, a)` of data actions from
    :math:`(s, a_t, t)`, :math:`a_t = \alpha_t a + \sigma_t \epsilon`, :math:`t \sim U(0, 1)`;
    its minimiser is :math:`E[Q(s, a) \mid s, a_t]`."""
    node = cfg.critic
    torch.manual_seed(int(cfg.seed) + 4)
    noisy = priors.Critic(
        data.state_dim, data.action_dim, width=int(node.width), depth=int(node.depth),
        schedule=schedule,
    )  # fmt: skip
    states, actions = torch.from_numpy(data.states), torch.from_numpy(data.actions)
    with torch.no_grad():
        values = critic(states, actions)
    optimiser = torch.optim.Adam(noisy.parameters(), lr=float(node.lr))
    g = torch.Generator().manual_seed(int(cfg.seed) + 5)
    for rows in _batches(len(states), int(node.batch), int(node.steps), g):
        t, _, _, _, a_t = diffuse(schedule, actions[rows], g)
        optimiser.zero_grad()
        (noisy(states[rows], a_t, t) - values[rows]).square().mean().backward()
        optimiser.step()
    return noisy.requires_grad_(False).eval()


def train_energy(
    cfg: DictConfig,
    data: offline.OfflineData,
    critic: priors.Critic,
    prior: priors.MLPDenoiser,
    safety: priors.Critic | None = None,
) -> priors.Critic:
    r"""QGPO's contrastive energy prediction (Lu et al., 2023, Eq. 13): for each of
    ``energy.states`` data states, ``energy.support`` actions :math:`\hat a_i` are drawn from
    the behaviour prior once; at a time :math:`t` shared by a state's support actions,

    .. math:: \mathcal{L} = -\sum_i \operatorname{softmax}_i(\beta Q(s, \hat a_i))
        \log \operatorname{softmax}_i f_\phi(s, \hat a_{i,t}, t),

    whose minimiser is :math:`f_\phi = \log E_{\mu(a \mid a_t, s)}[e^{\beta Q(s, a)}]`
    up to a function of :math:`(s, t)`: its gradient is the exact guidance term. With a
    ``safety`` classifier the targets are :math:`\operatorname{softmax}_i(\beta Q(s, \hat
    a_i) + \log p(\text{safe} \mid s, \hat a_i))`, the energy of :math:`\mu \exp(\beta
    Q)\, p(\text{safe})`."""
    node = cfg.energy
    m, k = min(int(node.states), len(data.states)), int(node.support)
    g = torch.Generator().manual_seed(int(cfg.seed) + 6)
    states = torch.from_numpy(data.states)[torch.randperm(len(data.states), generator=g)[:m]]
    rows = states.repeat_interleave(k, 0)
    x_T = guided.initial_noise(prior.schedule, (len(rows), *prior.shape), g)
    with torch.no_grad():
        support = guided.DDPM()(prior, x_T, guided.time_grid(int(cfg.steps)), generator=g,
                                state=rows).clamp(-1, 1)  # fmt: skip
        logits = float(node.beta) * critic(rows, support)
        if safety is not None:
            logits = logits + safety(rows, support, 0.0)
        target = torch.softmax(logits.view(m, k), 1)
    support = support.view(m, k, -1)
    torch.manual_seed(int(cfg.seed) + 7)
    energy = priors.Critic(
        data.state_dim, data.action_dim, width=int(cfg.critic.width),
        depth=int(cfg.critic.depth), schedule=prior.schedule,
    )  # fmt: skip
    optimiser = torch.optim.Adam(energy.parameters(), lr=float(cfg.critic.lr))
    for batch in _batches(m, int(node.batch), int(node.steps), g):
        t = torch.rand(len(batch), generator=g, dtype=torch.float64).clamp_min(1e-3)
        _, _, _, _, a_t = diffuse(prior.schedule, support[batch], g, t)  # (B, K, A)
        f = energy(
            states[batch].repeat_interleave(k, 0), a_t.flatten(0, 1), t.repeat_interleave(k)
        )
        optimiser.zero_grad()
        loss = -(target[batch] * torch.log_softmax(f.view(-1, k), 1)).sum(1).mean()
        loss.backward()
        optimiser.step()
    return energy.requires_grad_(False).eval()


def train_safety(
    cfg: DictConfig, data: offline.OfflineData, schedule: priors.Schedule
) -> priors.Critic:
    r"""A noise-aware classifier of safe actions, :math:`\log p(\text{safe} \mid s, a_t, t)`:
    binary cross-entropy of its logit against ``1 - costs`` on noisy data actions,
    :math:`t \sim U(0, 1)`."""
    node = cfg.critic
    torch.manual_seed(int(cfg.seed) + 8)
    safety = priors.Critic(
        data.state_dim, data.action_dim, width=int(node.width), depth=int(node.depth),
        schedule=schedule, output="log_prob",
    )  # fmt: skip
    states, actions = torch.from_numpy(data.states), torch.from_numpy(data.actions)
    safe = 1 - torch.from_numpy(data.costs)
    optimiser = torch.optim.Adam(safety.parameters(), lr=float(node.lr))
    g = torch.Generator().manual_seed(int(cfg.seed) + 9)
    for rows in _batches(len(states), int(node.batch), int(node.steps), g):
        t, _, _, _, a_t = diffuse(schedule, actions[rows], g)
        logit = safety.logit(states[rows], a_t, t)
        optimiser.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(logit, safe[rows]).backward()
        optimiser.step()
    return safety.requires_grad_(False).eval()


def sample_actions(
    cfg: DictConfig,
    method: str,
    scale: float,
    prior: priors.MLPDenoiser,
    critics: dict[str, Any],
    states: Tensor,
    seed: int,
) -> Tensor:
    """Actions :math:`(B, A)` for states :math:`(B, S)` by ``method`` (clipped to the
    bounds [-1, 1] of the prior's training data); ``critics`` holds the trained critics, the
    Gaussian policy and the return-conditioned policy (``return_cfg`` samples from it, not
    from ``prior``)."""
    if method == "gaussian_bc":
        return critics["gaussian"](states)[0].clamp(-1, 1)
    n = int(cfg.candidates) if method in ("select", "value_select") else 1
    rows = states.repeat_interleave(n, 0)
    g = torch.Generator().manual_seed(seed)
    base = critics["returns"] if method == "return_cfg" else prior
    x_T = guided.initial_noise(base.schedule, (len(rows), *base.shape), g)
    denoiser: priors.Denoiser = prior
    if method in ("value", "value_select"):
        denoiser = guided.GuidedDenoiser(prior, guided.ValueGuidance(critics["q"], rows, scale))
    elif method in ("noisy_value", "energy"):
        critic = critics["noisy" if method == "noisy_value" else "energy"]
        denoiser = guided.GuidedDenoiser(prior, guided.NoisyValueGuidance(critic, rows, scale))
    elif method == "safe_energy":
        denoiser = guided.GuidedDenoiser(
            prior,
            guided.NoisyValueGuidance(critics["safe_energy"], rows, 1.0),
            guided.NoisyValueGuidance(critics["safety"], rows, scale),
        )
    cond = {"state": rows}
    if method == "return_cfg":
        denoiser = guided.ClassifierFree(base, scale, key="ret", null={"ret": float("nan")})
        cond["ret"] = torch.full((len(rows), 1), float(cfg.returns.target))
    ts = guided.time_grid(int(cfg.steps))
    actions = guided.DDPM()(denoiser, x_T, ts, generator=g, **cond).clamp(-1, 1)
    if n == 1:
        return actions
    scores = critics["q"](rows, actions).view(-1, n)
    best = scores.argmax(1) + n * torch.arange(len(states))
    return actions[best]


def violations(task: str, actions: np.ndarray) -> np.ndarray:
    """Whether each action violates the task's safety constraint."""
    if task == "unsafe_bandit":
        return np.linalg.norm(actions, axis=1) < offline.UNSAFE_RADIUS
    return np.zeros(len(actions), bool)


def bandit_scores(task: str, card: dict[str, Any], actions: np.ndarray) -> dict[str, Any]:
    """Exact scores of bandit actions (see the module), from the data's modes."""
    modes, rewards = np.array(card["modes"]), np.array(card["mode_rewards"])
    distance = np.linalg.norm(actions[:, None] - modes[None], axis=-1)
    nearest = distance.argmin(1)
    histogram = np.bincount(nearest, minlength=len(modes)) / len(actions)
    safe = ~violations(task, modes)
    best = int(np.flatnonzero(safe)[rewards[safe].argmax()])
    return {
        "reward": float(rewards[nearest].mean()),
        "best_mode": float(histogram[best]),
        "ood": float((distance.min(1) > 0.2).mean()),
        "violations": float(violations(task, actions).mean()),
        "modes": [round(float(h), 4) for h in histogram],
    }


def latency(
    cfg: DictConfig,
    prior: priors.MLPDenoiser,
    critics: dict[str, Any],
    data: offline.OfflineData,
) -> dict[str, float]:
    """Median milliseconds per batch of ``latency.states`` actions (see the module)."""
    node = cfg.latency
    fast = cfg.copy()
    fast.steps = int(node.steps)
    rows = torch.arange(int(node.states)) % len(data.states)
    states = torch.from_numpy(data.states)[rows]
    timings = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(int(node.threads))
    try:
        for method in cfg.methods:
            seeds = itertools.count()  # the warm-up call draws seed 0, timed calls 1, 2, ...

            def run(method: str = method, seeds: Iterator[int] = seeds) -> Tensor:
                with gradients(method):
                    return sample_actions(fast, method, 1.0, prior, critics, states, next(seeds))

            timings[method] = 1000 * timed(run, int(node.repeats))[1]
    finally:
        torch.set_num_threads(threads)
    return timings


def train_all(
    cfg: DictConfig, data: offline.OfflineData
) -> tuple[priors.MLPDenoiser, dict[str, Any]]:
    """The diffusion policy and what ``cfg.methods`` need besides it."""
    prior = train_policy(cfg, data)
    critics: dict[str, Any] = {"q": train_critic(cfg, data)}
    if "gaussian_bc" in cfg.methods:
        critics["gaussian"] = train_gaussian(cfg, data)
    if "noisy_value" in cfg.methods:
        critics["noisy"] = train_noisy_critic(cfg, data, critics["q"], prior.schedule)
    if "energy" in cfg.methods:
        critics["energy"] = train_energy(cfg, data, critics["q"], prior)
    if "safe_energy" in cfg.methods:
        critics["safety"] = train_safety(cfg, data, prior.schedule)
        critics["safe_energy"] = train_energy(cfg, data, critics["q"], prior, critics["safety"])
    if "return_cfg" in cfg.methods:
        critics["returns"] = train_policy(cfg, data, returns=True)
    return prior, critics


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    torch.set_num_threads(int(cfg.threads))
    _check(cfg)
    directory = offline.DEFAULT_DIR if cfg.data_dir is None else Path(cfg.data_dir)
    data = offline.load(str(cfg.dataset), int(cfg.seed), directory)
    if envs.environment_of(str(cfg.dataset)) is not None:
        return run_env(cfg, data, out_dir)
    start = time.perf_counter()
    prior, critics = train_all(cfg, data)
    train_s = time.perf_counter() - start
    states = torch.from_numpy(data.states[: int(cfg.samples)])
    states = states[torch.arange(int(cfg.samples)) % len(states)]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    shown: dict[str, np.ndarray] = {}
    for method in cfg.methods:
        results[method] = {}
        for scale in cfg.scales if method in GUIDED else [0.0]:
            start = time.perf_counter()
            with gradients(method):
                actions = sample_actions(cfg, method, float(scale), prior, critics, states, 7)
            wall = time.perf_counter() - start
            scores = bandit_scores(str(cfg.dataset), data.card, actions.numpy()) | {"wall_s": wall}
            results[method][f"{float(scale):g}"] = scores
            if method not in GUIDED or float(scale) == float(cfg.shown_scale):
                shown[method] = actions.numpy()
    metrics = {
        "dataset": str(cfg.dataset),
        "latency_ms": latency(cfg, prior, critics, data),
        "data": data.card,
        "results": results,
        "train_s": train_s,
        "data_scores": bandit_scores(str(cfg.dataset), data.card, data.actions),
    }
    write(metrics, cfg, out_dir)
    figures(metrics, shown, data, cfg, out_dir)
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def normalised(returns: np.ndarray, card: dict[str, Any]) -> np.ndarray:
    """:math:`100 (R - R_{random}) / (R_{expert} - R_{random})` with the card's references."""
    refs = card["references"]
    return 100 * (returns - refs["random"]) / (refs["expert"] - refs["random"])


def gradients(method: str) -> AbstractContextManager[Any]:
    """Autograd on for the methods that differentiate (guidance), off for the others."""
    return nullcontext() if method in DIFFERENTIATING else torch.no_grad()


def standardise(
    data: offline.OfflineData,
) -> tuple[offline.OfflineData, Callable[[np.ndarray], np.ndarray]]:
    """The data with states and next states standardised by the states' mean and standard
    deviation (floored at 1e-2), and the map it applies to observations."""
    mean = data.states.mean(0)
    std = np.maximum(data.states.std(0), 1e-2)

    def observe(obs: np.ndarray) -> np.ndarray:
        return ((np.asarray(obs, np.float32) - mean) / std).astype(np.float32)

    scaled = dataclasses.replace(
        data, states=observe(data.states), next_states=observe(data.next_states)
    )
    return scaled, observe


def as_policy(
    cfg: DictConfig,
    method: str,
    scale: float,
    prior: priors.MLPDenoiser,
    critics: dict[str, Any],
    observe: Callable[[np.ndarray], np.ndarray] = np.asarray,
) -> envs.Policy:
    """The policy observations -> actions of ``method`` (numpy), fresh noise at every call
    (seeded by ``cfg.seed`` and the call's index); ``observe`` maps observations to the
    states the networks were trained on."""
    calls = iter(range(2**62))

    def policy(obs: np.ndarray) -> np.ndarray:
        states = torch.from_numpy(np.asarray(observe(obs), np.float32))
        seed = 7919 * int(cfg.seed) + next(calls)
        with gradients(method):
            actions = sample_actions(cfg, method, scale, prior, critics, states, seed)
        return actions.detach().numpy()

    return policy


def run_env(cfg: DictConfig, data: offline.OfflineData, out_dir: Path) -> dict[str, Any]:
    """Trains and evaluates every method in gymnasium for every seed of ``cfg.seeds``
    (``episodes`` episodes each, the episodes of a seed batched through the sampler)."""
    environment = str(cfg.dataset).split("_")[0]
    observe: Callable[[np.ndarray], np.ndarray] = np.asarray
    if cfg.normalise_states:
        data, observe = standardise(data)
    scores: dict[str, dict[str, list[float]]] = {}
    returns: dict[str, dict[str, list[float]]] = {}
    timing: dict[str, float] = {}
    start = time.perf_counter()
    for seed in cfg.seeds:
        run_cfg = cfg.copy()
        run_cfg.seed = int(seed)
        prior, critics = train_all(run_cfg, data)
        print(f"seed {seed}: trained ({time.perf_counter() - start:.0f} s)", flush=True)
        if not timing:
            timing = latency(cfg, prior, critics, data)
        for method in cfg.methods:
            for scale in cfg.scales if method in GUIDED else [0.0]:
                policy = as_policy(run_cfg, method, float(scale), prior, critics, observe)
                episode_returns = envs.evaluate(
                    policy, int(cfg.episodes), 10000 * (int(seed) + 1), environment
                )
                key = f"{float(scale):g}"
                score = float(normalised(episode_returns, data.card).mean())
                scores.setdefault(method, {}).setdefault(key, []).append(score)
                elapsed = time.perf_counter() - start
                print(f"seed {seed} {method} {key}: {score:.1f} ({elapsed:.0f} s)", flush=True)
                returns.setdefault(method, {}).setdefault(key, []).append(
                    float(episode_returns.mean())
                )
    results = {
        method: {
            key: {
                "score": float(np.mean(v)),
                "score_std": float(np.std(v)),
                "per_seed": v,
                "return": float(np.mean(returns[method][key])),
            }
            for key, v in by_scale.items()
        }
        for method, by_scale in scores.items()
    }
    metrics = {
        "dataset": str(cfg.dataset),
        "latency_ms": timing,
        "data": data.card,
        "results": results,
        "seeds": [int(s) for s in cfg.seeds],
        "episodes": int(cfg.episodes),
        "wall_s": time.perf_counter() - start,
        "data_score": float(normalised(np.array(data.card["behaviour_return"]), data.card)),
    }
    write_env(metrics, cfg, out_dir)
    figure_env(metrics, out_dir)
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def write_env(metrics: dict[str, Any], cfg: DictConfig, out: Path) -> None:
    lines = [
        (
            f"{cfg.dataset}: normalised score (100 = scripted expert, 0 = random), mean +- std "
            f"over seeds {list(cfg.seeds)} of {cfg.episodes} gymnasium episodes each; DDPM "
            f"{cfg.steps} steps, selection from {cfg.candidates} candidates"
        ),
        "",
        "| method | scale | normalised score | return |",
        "|---|---|---|---|",
        f"| data | - | {metrics['data_score']:.1f} | {metrics['data']['behaviour_return']:.1f} |",
    ]
    for method, by_scale in metrics["results"].items():
        for scale, r in by_scale.items():
            lines.append(
                f"| {method} | {scale} | {r['score']:.1f} +- {r['score_std']:.1f} | "
                f"{r['return']:.1f} |"
            )
    lines += latency_lines(metrics, cfg)
    (out / "table.md").write_text("\n".join(lines) + "\n")


def figure_env(metrics: dict[str, Any], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    baselines = iter(("k", "0.45", "0.7", "0.85"))
    for method, by_scale in metrics["results"].items():
        scores = [r["score"] for r in by_scale.values()]
        stds = [r["score_std"] for r in by_scale.values()]
        if method in GUIDED:
            x = [max(float(s), 0.01) for s in by_scale]
            ax.errorbar(x, scores, yerr=stds, fmt="-o", label=method, capsize=2)
        else:  # baselines in shades of grey, dashed
            ax.axhline(scores[0], ls="--", color=next(baselines), label=method)
    ax.set_xscale("log")
    ax.set_xlabel("guidance scale (0 at 0.01)")
    ax.set_ylabel("normalised score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=100)
    plt.close(fig)


def latency_lines(metrics: dict[str, Any], cfg: DictConfig) -> list[str]:
    node = cfg.latency
    lines = [
        "",
        (
            f"Latency: {node.states} states in one batch, DDPM {node.steps} steps, scale 1, "
            f"{node.threads} CPU thread(s), median of {node.repeats} (ms)"
        ),
        "",
        "| method | ms |",
        "|---|---|",
    ]
    return lines + [f"| {m} | {ms:.1f} |" for m, ms in metrics["latency_ms"].items()]


def write(metrics: dict[str, Any], cfg: DictConfig, out: Path) -> None:
    lines = [
        (
            f"{cfg.dataset}: {cfg.samples} actions, DDPM {cfg.steps} steps, selection from "
            f"{cfg.candidates} candidates; reward = mean reward of the nearest mode "
            f"(optimum {metrics['data']['optimum']}); OOD = farther than 0.2 from every mode"
        ),
        "",
        "| method | scale | expected reward | best safe mode | OOD | violations | modes |",
        "|---|---|---|---|---|---|---|",
    ]
    d = metrics["data_scores"]
    lines.append(f"| data | - | {d['reward']:.2f} | {d['best_mode']:.2f} | {d['ood']:.3f} | "
                 f"{d['violations']:.3f} | {d['modes']} |")  # fmt: skip
    for method, by_scale in metrics["results"].items():
        for scale, r in by_scale.items():
            lines.append(
                f"| {method} | {scale} | {r['reward']:.2f} | {r['best_mode']:.2f} | "
                f"{r['ood']:.3f} | {r['violations']:.3f} | {r['modes']} |"
            )
    lines += latency_lines(metrics, cfg)
    (out / "table.md").write_text("\n".join(lines) + "\n")


def figures(
    metrics: dict[str, Any],
    shown: dict[str, np.ndarray],
    data: offline.OfflineData,
    cfg: DictConfig,
    out: Path,
) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for method, by_scale in metrics["results"].items():
        if method not in GUIDED:
            continue
        scales = [float(s) for s in by_scale]
        x = [max(s, 0.1) for s in scales]  # scale 0 drawn at 0.1 on the log axis
        axes[0].plot(x, [r["reward"] for r in by_scale.values()], "-o", label=method)
        axes[1].plot(x, [r["ood"] for r in by_scale.values()], "-o", label=method)
        axes[2].plot(x, [r["violations"] for r in by_scale.values()], "-o", label=method)
    for method in ("bc", "select"):
        if method in metrics["results"]:
            axes[0].axhline(metrics["results"][method]["0"]["reward"], ls="--", label=method,
                            color="k" if method == "bc" else "C3")  # fmt: skip
    axes[2].axhline(metrics["data_scores"]["violations"], ls="--", color="0.5", label="data")
    for ax, title in zip(axes, ("expected reward", "OOD rate", "violation rate"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("guidance scale (0 at 0.1)")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scales.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 2.6))
    axes = np.atleast_1d(axes)
    for ax, (method, actions) in zip(axes, shown.items(), strict=True):
        ax.scatter(*data.actions[:2000].T, s=1, color="0.8")
        ax.scatter(*actions.T, s=2, color="C0")
        if cfg.dataset == "unsafe_bandit":
            ax.add_patch(plt.Circle((0, 0), offline.UNSAFE_RADIUS, color="C3", alpha=0.2))
        scale = f" (scale {cfg.shown_scale:g})" if method in GUIDED else ""
        ax.set_title(method + scale, fontsize=8)
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(out / "actions.png", dpi=100)
    plt.close(fig)


@hydra.main(version_base=None, config_path="configs/rl", config_name="rl")
def main(cfg: DictConfig) -> None:
    run_dir = prepare_run(cfg)  # unknown keys, wrong kinds of values, the run folder
    metrics = resumable(run, cfg, run_dir)
    for method, by_scale in metrics["results"].items():
        for scale, r in by_scale.items():
            print(method, scale, r)


if __name__ == "__main__":
    launch(main)
