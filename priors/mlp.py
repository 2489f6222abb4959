r"""A residual MLP denoiser for vector-valued data (joint angles, actions, low-dimensional
signals), the vector counterpart of :mod:`priors.network`'s U-Net.

The network predicts :math:`v = \alpha_t \epsilon - \sigma_t x` (Salimans & Ho, 2022) from
:math:`x_t` and a sinusoidal embedding of :math:`t`; each residual block is
:math:`h \leftarrow h + W_2\, \mathrm{SiLU}(W_1\, \mathrm{LN}(h) + e)`, and the output
layer starts at zero, so an untrained denoiser returns :math:`\hat x = \alpha_t x_t` (the
posterior mean of unit-variance data centred at 0 in the high-noise limit).

Conditions are named vectors (a policy's state, a target return): each has its own small MLP
embedding, added to the time embedding :math:`e = e(t) + \sum_k e_k(c_k)`. A condition
listed as *optional* was dropped during training with some probability (condition dropout,
Ho & Salimans, 2022) and then uses a learned null embedding; a row whose value is NaN, or a
missing keyword, asks for it, which is what classifier-free guidance needs (``null=
{name: float("nan")}``). A required condition must be given and finite. Within a sampler's
run a condition's embedding is computed once, not at every step
(:func:`priors.fixed_conditions`).

References:
    | Progressive Distillation for Fast Sampling of Diffusion Models (Salimans & Ho, 2022)
    | https://arxiv.org/abs/2202.00512
    | Classifier-Free Diffusion Guidance (Ho & Salimans, 2022) https://arxiv.org/abs/2207.12598
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from torch import Tensor, nn

import checks

from checks import all_finite
from priors.conditions import remember
from priors.denoiser import Denoiser
from priors.embedding import timestep_embedding
from priors.layers import run_layers
from priors.noising import diffuse
from priors.schedules import Schedule
from priors.tweedie import v_from_noise, x0_from_v

__all__ = ["MLP", "MLPDenoiser"]


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.inner = nn.Linear(width, width)
        self.outer = nn.Linear(width, width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        inner = run_layers((self.norm, self.inner), h) + emb
        return h + run_layers((self.outer,), nn.functional.silu(inner))


class MLP(nn.Module):
    r"""The residual MLP :math:`(x_t, t, c) \mapsto v`, inputs :math:`(B, D)`, :math:`(B,)` and
    condition vectors :math:`(B, D_k)`.

    Arguments:
        dim: The data dimension :math:`D`.
        width: The hidden width.
        blocks: The number of residual blocks.
        embedding: The size of the sinusoidal time embedding.
        conditions: Condition names and sizes, e.g. ``{"state": 3}`` (none by default).
        optional: The conditions that may be dropped (they get a learned null embedding).
    """

    def __init__(
        self,
        dim: int,
        width: int = 128,
        blocks: int = 3,
        embedding: int = 64,
        conditions: Mapping[str, int] | None = None,
        optional: Sequence[str] = (),
    ) -> None:
        super().__init__()
        conditions = dict(conditions or {})
        sizes = [("dim", dim), ("width", width), ("blocks", blocks)]
        sizes += [(f"condition {k!r}", v) for k, v in conditions.items()]
        for name, value in sizes:
            checks.integer(value, name, low=1)
        unknown = [k for k in optional if k not in conditions]
        if unknown:
            raise ValueError(f"optional names {unknown} are not conditions {list(conditions)}")
        self.dim, self.embedding = dim, embedding
        self.conditions, self.optional = conditions, tuple(optional)
        #: The constructor's arguments (what :func:`priors.weights.save` records).
        self.arguments = {
            "dim": dim, "width": width, "blocks": blocks, "embedding": embedding,
            "conditions": dict(conditions), "optional": list(optional),
        }  # fmt: skip
        self.time = nn.Sequential(nn.Linear(embedding, width), nn.SiLU(), nn.Linear(width, width))
        self.condition = nn.ModuleDict(
            {
                k: nn.Sequential(nn.Linear(size, width), nn.SiLU(), nn.Linear(width, width))
                for k, size in conditions.items()
            }
        )
        self.null = nn.ParameterDict({k: nn.Parameter(torch.zeros(width)) for k in optional})
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def check_conditions(self, batch: int, cond: Mapping[str, Any]) -> dict[str, Tensor | None]:
        """Validates condition keywords: known names, shapes :math:`(B, D_k)` (or one row for
        all), required ones present and finite; returns them (None where dropped)."""
        self._check_names(cond)
        return {k: self._check_condition(k, cond.get(k), batch) for k in self.conditions}

    def _check_names(self, cond: Mapping[str, Any]) -> None:
        unknown = [k for k in cond if k not in self.conditions]
        if unknown:
            raise ValueError(
                f"unknown condition(s) {unknown}; this network takes {list(self.conditions)}"
            )

    def _check_condition(self, k: str, value: Any, batch: int) -> Tensor | None:
        size = self.conditions[k]
        if value is None:
            if k not in self.optional:
                raise ValueError(f"the condition {k!r} is required (shape (B, {size}))")
            return None
        value = torch.as_tensor(value)
        if value.ndim == 1 and value.shape[0] == size:
            value = value[None]
        if value.ndim != 2 or value.shape[1] != size or value.shape[0] not in (1, batch):
            raise ValueError(
                f"condition {k!r} must have shape ({batch}, {size}), got {tuple(value.shape)}"
            )
        if k not in self.optional and not all_finite(value):
            raise ValueError(f"the condition {k!r} contains NaN or Inf")
        return value.expand(batch, size)

    def _embed(self, k: str, value: Any, x_t: Tensor) -> Tensor:
        """:math:`e_k(c_k)` of a condition after its check, the null embedding for dropped
        rows (a whole condition left out: the null embedding, one row for all)."""
        value = self._check_condition(k, value, x_t.shape[0])
        if value is None:
            return self.null[k]
        value = value.to(x_t)
        if k not in self.null:  # required: checked finite
            return run_layers(self.condition[k], value)
        dropped = torch.isnan(value).any(1, keepdim=True)
        embedded = run_layers(self.condition[k], torch.where(dropped, 0.0, value))
        return torch.where(dropped, self.null[k], embedded)

    def forward(self, x_t: Tensor, t: Tensor, **cond: Tensor | None) -> Tensor:
        """:math:`v`, :math:`(B, D)`, for times :math:`(B,)` or one time :math:`()` for all
        rows (embedded once)."""
        emb = run_layers(self.time, timestep_embedding(t.reshape(-1), self.embedding))
        self._check_names(cond)
        for k in self.conditions:
            value = cond.get(k)
            if value is None:
                emb = emb + self._embed(k, value, x_t)
                continue
            source = torch.as_tensor(value)
            null = [self.null[k]] if k in self.null else []
            parameters = [*self.condition[k].parameters(), *null]
            emb = emb + remember(
                (self, k),
                source,
                lambda k=k, value=source: self._embed(k, value, x_t),
                parameters,
                (x_t.shape[0], x_t.dtype, x_t.device),
            )
        h = run_layers((self.inp,), x_t)
        for block in self.blocks:
            h = block(h, emb)
        return run_layers(self.out, h)


class MLPDenoiser(Denoiser):
    r"""A v-prediction :class:`MLP` as a denoiser of vectors :math:`(B, D)`, conditioned by
    the network's named condition vectors (keywords).

    Arguments:
        network: The MLP.
        schedule: The schedule it is (or will be) trained with.
    """

    def __init__(self, network: MLP, schedule: Schedule) -> None:
        super().__init__(schedule)
        self.network = network
        self.shape = (network.dim,)

    @property
    def conditions(self) -> dict[str, int]:
        """The condition names and sizes."""
        return dict(self.network.conditions)

    def _check(self, x: Tensor, name: str) -> None:
        if x.ndim != 2 or x.shape[1] != self.network.dim:
            raise ValueError(
                f"{name} must have shape (B, {self.network.dim}), got {tuple(x.shape)}"
            )

    def forward(self, x_t: Tensor, t: Tensor, **cond: Tensor | None) -> Tensor:
        self._check(x_t, "x_t")
        dtype = self.network.inp.weight.dtype
        v = self.network(x_t.to(dtype), t, **cond).to(x_t.dtype)
        return x0_from_v(x_t, v, *self.schedule(t))

    def loss(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        dropout: float = 0.0,
        **cond: Tensor,
    ) -> Tensor:
        r"""The v-prediction loss :math:`E_{t, \epsilon} \lVert v_\theta(x_t, t, c) - v
        \rVert^2` on a batch of clean data :math:`(B, D)` with its conditions,
        :math:`t \sim U(0, 1)`; each optional condition of a row is dropped with probability
        ``dropout`` (its null embedding is trained)."""
        self._check(x, "x")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        cond = self.network.check_conditions(x.shape[0], cond)
        for k in self.network.optional:
            value = cond[k]
            if dropout > 0 and value is not None:
                drop = torch.rand(x.shape[0], 1, generator=generator, device=x.device) < dropout
                cond[k] = torch.where(drop, float("nan"), value.to(x.dtype))
        t = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        n = diffuse(self.schedule, x, generator, t)
        target = v_from_noise(x, n.eps, n.alpha_t, n.sigma_t)
        return (self.network(n.x_t, t, **cond) - target).square().sum(1).mean()
