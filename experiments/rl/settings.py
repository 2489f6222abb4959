"""The settings of a diffusion policy's training and sampling, as typed values.

:class:`Settings` is what :mod:`experiments.rl.training`, :mod:`experiments.rl.methods` and
:mod:`experiments.rl.saved` take; the app builds it from its config
(:meth:`Settings.from_mapping`), a script builds it directly. Every value is checked when
the settings are made (:mod:`checks`), naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import checks

__all__ = [
    "CriticSettings", "EnergySettings", "PolicySettings", "ReturnsSettings", "Settings",
]  # fmt: skip


def _keep(settings: object, key: str, value: object) -> None:
    """Stores the checked (converted) value on a frozen dataclass."""
    object.__setattr__(settings, key, value)


@dataclass(frozen=True)
class PolicySettings:
    """The action prior's MLP and its behaviour-cloning optimiser (also the Gaussian
    baseline's optimiser)."""

    width: int = 64
    blocks: int = 2
    steps: int = 4000
    batch: int = 256
    lr: float = 1e-3

    def __post_init__(self) -> None:
        for key in ("width", "blocks", "steps", "batch"):
            _keep(self, key, checks.integer(getattr(self, key), f"policy.{key}", low=1))
        _keep(self, "lr", checks.number(self.lr, "policy.lr", low=0, open_low=True))


@dataclass(frozen=True)
class CriticSettings:
    """The critics' MLPs and implicit Q-learning (also used by every other critic)."""

    width: int = 64
    depth: int = 2
    steps: int = 3000
    batch: int = 256
    lr: float = 3e-4
    discount: float = 0.99
    expectile: float = 0.7
    polyak: float = 0.995
    reward_scale: float = 1.0

    def __post_init__(self) -> None:
        for key in ("width", "depth", "steps", "batch"):
            _keep(self, key, checks.integer(getattr(self, key), f"critic.{key}", low=1))
        _keep(self, "lr", checks.number(self.lr, "critic.lr", low=0, open_low=True))
        _keep(self, "discount", checks.number(self.discount, "critic.discount", low=0, high=1))
        _keep(
            self,
            "expectile",
            checks.number(
                self.expectile, "critic.expectile", low=0, high=1, open_low=True, open_high=True
            ),
        )
        _keep(
            self,
            "polyak",
            checks.number(self.polyak, "critic.polyak", low=0, high=1, open_high=True),
        )
        _keep(
            self,
            "reward_scale",
            checks.number(self.reward_scale, "critic.reward_scale", low=0, open_low=True),
        )


@dataclass(frozen=True)
class EnergySettings:
    """QGPO's contrastive energy: scale 1 samples :math:`\\mu \\exp(\\beta Q)`."""

    beta: float = 3.0
    states: int = 1024
    support: int = 16
    steps: int = 3000
    batch: int = 64

    def __post_init__(self) -> None:
        _keep(self, "beta", checks.number(self.beta, "energy.beta", low=0))
        for key in ("states", "support", "steps", "batch"):
            _keep(self, key, checks.integer(getattr(self, key), f"energy.{key}", low=1))


@dataclass(frozen=True)
class ReturnsSettings:
    """The return-conditioned policy: condition dropout in training, target at sampling."""

    dropout: float = 0.25
    target: float = 1.0

    def __post_init__(self) -> None:
        _keep(
            self,
            "dropout",
            checks.number(
                self.dropout, "returns.dropout", low=0, high=1, open_low=True, open_high=True
            ),
        )
        _keep(self, "target", checks.number(self.target, "returns.target", low=0, high=1))


@dataclass(frozen=True)
class Settings:
    """Training and sampling settings: the networks, DDPM ``steps``, best-of-``candidates``
    selection, and the ``seed`` every training stream is offset from."""

    policy: PolicySettings = field(default_factory=PolicySettings)
    critic: CriticSettings = field(default_factory=CriticSettings)
    energy: EnergySettings = field(default_factory=EnergySettings)
    returns: ReturnsSettings = field(default_factory=ReturnsSettings)
    steps: int = 50
    candidates: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        _keep(self, "steps", checks.integer(self.steps, "steps", low=1))
        _keep(self, "candidates", checks.integer(self.candidates, "candidates", low=1))
        _keep(self, "seed", checks.integer(self.seed, "seed", low=0))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Settings from a mapping with the same keys (nested mappings for the groups);
        keys that are not settings are ignored, so an app's whole config can be passed."""
        groups = {
            "policy": PolicySettings, "critic": CriticSettings, "energy": EnergySettings,
            "returns": ReturnsSettings,
        }  # fmt: skip
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in values:
                continue
            value = values[f.name]
            kwargs[f.name] = groups[f.name](**dict(value)) if f.name in groups else value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what :meth:`from_mapping` reads back)."""
        return asdict(self)
