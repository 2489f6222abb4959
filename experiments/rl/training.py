r"""Training the networks of a diffusion policy offline, from typed settings (no Hydra).

- the action prior: a state-conditioned :class:`priors.MLPDenoiser` trained by behaviour
  cloning (v-prediction); with ``returns``, a second one also conditioned on the normalised
  future reward :math:`R \in [0, 1]`, dropped with probability ``returns.dropout``
  (Decision Diffuser's return-conditioned policy, Ajay et al., 2023);
- the critic :math:`Q(s, a)`: implicit Q-learning (Kostrikov et al., 2022): expectile
  regression of :math:`V(s)` on :math:`Q`, then :math:`Q(s, a) \leftarrow r + \gamma (1 - d)
  V(s')` with a Polyak-averaged target;
- a noise-aware critic :math:`Q_\phi(s, a_t, t)` regressing :math:`Q(s, a)` of data actions
  from noisy ones (its minimiser is :math:`E[Q(s, a) \mid s, a_t]`);
- QGPO's contrastive energy (Lu et al., 2023) and a noise-aware classifier of safe actions;
- the Gaussian behaviour-cloning baseline (:class:`priors.GaussianPolicy`).

Every network draws its initialisation and its batches from its own named stream,
:data:`STREAMS` (an offset from the settings' seed), so adding a network changes no other.

References:
    | Offline Reinforcement Learning with Implicit Q-Learning (Kostrikov et al., 2022)
    | https://arxiv.org/abs/2110.06169
    | Contrastive Energy Prediction for Exact Energy-Guided Diffusion Sampling in Offline
    | Reinforcement Learning (Lu et al., 2023) https://arxiv.org/abs/2304.12824
    | Is Conditional Generative Modeling all you need for Decision-Making? (Ajay et al.,
    | 2023) https://arxiv.org/abs/2211.15657
"""

from __future__ import annotations

import copy

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from torch import Tensor, nn

import guided
import priors

from experiments.rl.datasets import FIELDS, OfflineData
from experiments.rl.settings import Settings

__all__ = [
    "NETWORKS", "STREAMS", "Trained", "expectile_loss", "normalised_returns", "train_all",
    "train_critic", "train_energy", "train_gaussian", "train_noisy_critic", "train_policy",
    "train_safety",
]  # fmt: skip

#: Each network's random streams: offsets from the seed, named so none is reused.
STREAMS = {
    "policy_init": 0, "policy": 1, "critic_init": 2, "critic": 3, "noisy_init": 4,
    "noisy": 5, "energy_support": 6, "energy_init": 7, "safety_init": 8, "safety": 9,
    "gaussian_init": 10, "gaussian": 11, "returns_init": 12, "returns": 13,
}  # fmt: skip


@dataclass
class Trained:
    """The networks of one training run (``None``: not trained, no method needed it)."""

    prior: priors.MLPDenoiser
    q: priors.Critic
    gaussian: priors.GaussianPolicy | None = None
    noisy: priors.Critic | None = None
    energy: priors.Critic | None = None
    safety: priors.Critic | None = None
    safe_energy: priors.Critic | None = None
    returns: priors.MLPDenoiser | None = None


def _stream(settings: Settings, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(settings.seed + STREAMS[name])


def _initialised(settings: Settings, name: str, build: type[nn.Module], *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    """``build(*args, **kwargs)`` with its initialisation drawn from stream ``name`` (the
    global generator is restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed + STREAMS[name])
        return build(*args, **kwargs)


def _batches(n: int, size: int, steps: int, g: torch.Generator) -> Iterator[Tensor]:
    for _ in range(steps):
        yield torch.randint(0, n, (size,), generator=g)


def normalised_returns(data: OfflineData) -> Tensor:
    """The data's future rewards mapped to [0, 1] by their range, :math:`(N, 1)`."""
    future = torch.from_numpy(data.future_rewards)[:, None]
    low, high = future.min(), future.max()
    return (future - low) / (high - low).clamp_min(1e-8)


def train_policy(
    settings: Settings, data: OfflineData, returns: bool = False
) -> priors.MLPDenoiser:
    """Diffusion behaviour cloning: the v-prediction loss of actions given states (and, with
    ``returns``, given the normalised future reward, dropped with probability
    ``returns.dropout``)."""
    node = settings.policy
    conditions = {"state": data.state_dim} | ({"ret": 1} if returns else {})
    net = _initialised(
        settings, "returns_init" if returns else "policy_init", priors.MLP, data.action_dim,
        width=node.width, blocks=node.blocks, conditions=conditions,
        optional=["ret"] if returns else [],
    )  # fmt: skip
    prior = priors.MLPDenoiser(net, priors.CosineSchedule())
    states, actions = torch.from_numpy(data.states), torch.from_numpy(data.actions)
    future = normalised_returns(data) if returns else None
    dropout = settings.returns.dropout if returns else 0.0
    optimiser = torch.optim.Adam(prior.parameters(), lr=node.lr)
    g = _stream(settings, "returns" if returns else "policy")
    for rows in _batches(len(states), node.batch, node.steps, g):
        optimiser.zero_grad()
        cond = {"state": states[rows]} | ({} if future is None else {"ret": future[rows]})
        prior.loss(actions[rows], g, dropout=dropout, **cond).backward()
        optimiser.step()
    return prior.requires_grad_(False).eval()


def train_gaussian(settings: Settings, data: OfflineData) -> priors.GaussianPolicy:
    """The Gaussian baseline by maximum likelihood (the policy's optimiser settings)."""
    node = settings.policy
    policy = _initialised(
        settings, "gaussian_init", priors.GaussianPolicy, data.state_dim, data.action_dim,
        settings.critic.width,
    )  # fmt: skip
    states, actions = torch.from_numpy(data.states), torch.from_numpy(data.actions)
    optimiser = torch.optim.Adam(policy.parameters(), lr=node.lr)
    for rows in _batches(len(states), node.batch, node.steps, _stream(settings, "gaussian")):
        optimiser.zero_grad()
        policy.nll(states[rows], actions[rows]).backward()
        optimiser.step()
    return policy.requires_grad_(False).eval()


def expectile_loss(diff: Tensor, tau: float) -> Tensor:
    r"""IQL's :math:`L_2^\tau(u) = |\tau - 1(u < 0)|\, u^2`, averaged."""
    weight = torch.where(diff < 0, 1 - tau, tau)
    return (weight * diff.square()).mean()


def train_critic(settings: Settings, data: OfflineData) -> priors.Critic:
    """Implicit Q-learning (expectile value, TD critic with a Polyak target), on rewards
    multiplied by ``critic.reward_scale``."""
    node = settings.critic
    s_dim, a_dim = data.state_dim, data.action_dim

    def networks() -> tuple[priors.Critic, priors.Critic]:
        q = priors.Critic(s_dim, a_dim, width=node.width, depth=node.depth)
        return q, priors.Critic(s_dim, 0, width=node.width, depth=node.depth)

    q, v = _initialised(settings, "critic_init", networks)
    target = copy.deepcopy(q).requires_grad_(False)
    arrays = [torch.from_numpy(getattr(data, k)) for k in FIELDS[:5]]
    states, actions, rewards, next_states, terminals = arrays
    opt_q = torch.optim.Adam(q.parameters(), lr=node.lr)
    opt_v = torch.optim.Adam(v.parameters(), lr=node.lr)
    for rows in _batches(len(states), node.batch, node.steps, _stream(settings, "critic")):
        s, a = states[rows], actions[rows]
        with torch.no_grad():
            q_target = target(s, a)
        opt_v.zero_grad()
        expectile_loss(q_target - v(s), node.expectile).backward()
        opt_v.step()
        with torch.no_grad():
            reward = node.reward_scale * rewards[rows]
            backup = reward + node.discount * (1 - terminals[rows]) * v(next_states[rows])
        opt_q.zero_grad()
        (q(s, a) - backup).square().mean().backward()
        opt_q.step()
        with torch.no_grad():
            for p, p_target in zip(q.parameters(), target.parameters(), strict=True):
                p_target.lerp_(p, 1 - node.polyak)
    return q.requires_grad_(False).eval()


def train_noisy_critic(
    settings: Settings, data: OfflineData, critic: priors.Critic, schedule: priors.Schedule
) -> priors.Critic:
    r"""A noise-aware critic: regresses :math:`Q(s, a)` of data actions from
    :math:`(s, a_t, t)`, :math:`a_t = \alpha_t a + \sigma_t \epsilon`, :math:`t \sim U(0, 1)`;
    its minimiser is :math:`E[Q(s, a) \mid s, a_t]`."""
    node = settings.critic
    noisy = _initialised(
        settings, "noisy_init", priors.Critic, data.state_dim, data.action_dim,
        width=node.width, depth=node.depth, schedule=schedule,
    )  # fmt: skip
    states, actions = torch.from_numpy(data.states), torch.from_numpy(data.actions)
    with torch.no_grad():
        values = critic(states, actions)
    optimiser = torch.optim.Adam(noisy.parameters(), lr=node.lr)
    g = _stream(settings, "noisy")
    for rows in _batches(len(states), node.batch, node.steps, g):
        n = priors.diffuse(schedule, actions[rows], g)
        optimiser.zero_grad()
        (noisy(states[rows], n.x_t, n.t) - values[rows]).square().mean().backward()
        optimiser.step()
    return noisy.requires_grad_(False).eval()


def train_energy(
    settings: Settings,
    data: OfflineData,
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
    node = settings.energy
    m, k = min(node.states, len(data.states)), node.support
    g = _stream(settings, "energy_support")
    states = torch.from_numpy(data.states)[torch.randperm(len(data.states), generator=g)[:m]]
    rows = states.repeat_interleave(k, 0)
    x_T = guided.initial_noise(prior.schedule, (len(rows), *prior.shape), g)
    with torch.no_grad():
        support = guided.DDPM()(prior, x_T, guided.time_grid(settings.steps), generator=g,
                                state=rows).clamp(-1, 1)  # fmt: skip
        logits = node.beta * critic(rows, support)
        if safety is not None:
            logits = logits + safety(rows, support, 0.0)
        target = torch.softmax(logits.view(m, k), 1)
    support = support.view(m, k, -1)
    energy = _initialised(
        settings, "energy_init", priors.Critic, data.state_dim, data.action_dim,
        width=settings.critic.width, depth=settings.critic.depth, schedule=prior.schedule,
    )  # fmt: skip
    optimiser = torch.optim.Adam(energy.parameters(), lr=settings.critic.lr)
    for batch in _batches(m, node.batch, node.steps, g):
        t = torch.rand(len(batch), generator=g, dtype=torch.float64).clamp_min(1e-3)
        a_t = priors.diffuse(prior.schedule, support[batch], g, t).x_t  # (B, K, A)
        f = energy(
            states[batch].repeat_interleave(k, 0), a_t.flatten(0, 1), t.repeat_interleave(k)
        )
        optimiser.zero_grad()
        loss = -(target[batch] * torch.log_softmax(f.view(-1, k), 1)).sum(1).mean()
        loss.backward()
        optimiser.step()
    return energy.requires_grad_(False).eval()


def train_safety(
    settings: Settings, data: OfflineData, schedule: priors.Schedule
) -> priors.Critic:
    r"""A noise-aware classifier of safe actions, :math:`\log p(\text{safe} \mid s, a_t, t)`:
    binary cross-entropy of its logit against ``1 - costs`` on noisy data actions,
    :math:`t \sim U(0, 1)`."""
    node = settings.critic
    safety = _initialised(
        settings, "safety_init", priors.Critic, data.state_dim, data.action_dim,
        width=node.width, depth=node.depth, schedule=schedule, output="log_prob",
    )  # fmt: skip
    states, actions = torch.from_numpy(data.states), torch.from_numpy(data.actions)
    safe = 1 - torch.from_numpy(data.costs)
    optimiser = torch.optim.Adam(safety.parameters(), lr=node.lr)
    g = _stream(settings, "safety")
    for rows in _batches(len(states), node.batch, node.steps, g):
        n = priors.diffuse(schedule, actions[rows], g)
        logit = safety.logit(states[rows], n.x_t, n.t)
        optimiser.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(logit, safe[rows]).backward()
        optimiser.step()
    return safety.requires_grad_(False).eval()


#: What each optional network is trained from (``train_all`` trains the ones asked for).
NETWORKS = ("gaussian", "noisy", "energy", "safety", "safe_energy", "returns")


def train_all(settings: Settings, data: OfflineData, needs: set[str]) -> Trained:
    """The prior, the critic, and each network of :data:`NETWORKS` named in ``needs``."""
    unknown = sorted(needs - set(NETWORKS))
    if unknown:
        raise ValueError(f"unknown networks {unknown}; available: {list(NETWORKS)}")
    prior = train_policy(settings, data)
    out = Trained(prior, train_critic(settings, data))
    if "gaussian" in needs:
        out.gaussian = train_gaussian(settings, data)
    if "noisy" in needs:
        out.noisy = train_noisy_critic(settings, data, out.q, prior.schedule)
    if "energy" in needs:
        out.energy = train_energy(settings, data, out.q, prior)
    if "safety" in needs or "safe_energy" in needs:
        out.safety = train_safety(settings, data, prior.schedule)
    if "safe_energy" in needs:
        out.safe_energy = train_energy(settings, data, out.q, prior, out.safety)
    if "returns" in needs:
        out.returns = train_policy(settings, data, returns=True)
    return out
