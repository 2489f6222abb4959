"""A trained diffusion policy on disk, and acting with it from Python (no Hydra).

The steering app saves what it trains (``policy/`` in its run folder; ``policy-seed<k>/``
per seed on environments). Load it and act::

    import torch
    from experiments.rl import saved

    policy = saved.load("outputs/rl/policy")
    states = torch.zeros(8, policy.state_dim)
    actions = policy.act(states, method="value", scale=3.0, seed=0)   # (8, A), in [-1, 1]

A folder holds one safetensors file per trained network, written and read by
:mod:`priors.weights` (architecture in the metadata, content hash checked on load),
``policy.json`` (the settings, the data set, the state normalisation) and ``README.md``, the
card. :meth:`SavedPolicy.act` standardises raw states as the networks saw them in
training when the run standardised them.
"""

from __future__ import annotations

import json

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torch import Tensor

from experiments.rl.methods import METHODS, act
from experiments.rl.scoring import Standardiser
from experiments.rl.settings import Settings
from experiments.rl.training import Trained
from priors import weights
from priors.files import atomic_write_text

__all__ = ["SavedPolicy", "load", "save"]

MANIFEST = "policy.json"


@dataclass
class SavedPolicy:
    """Trained networks with their settings; :meth:`act` samples actions for states."""

    trained: Trained
    settings: Settings
    dataset: str
    standardiser: Standardiser | None = None

    @property
    def state_dim(self) -> int:
        return int(self.trained.q.arguments["state_dim"])

    @property
    def methods(self) -> list[str]:
        """The methods whose networks this policy holds."""
        return [
            name
            for name, m in METHODS.items()
            if all(getattr(self.trained, k) is not None for k in m.networks)
        ]

    def act(
        self, states: Tensor | np.ndarray, method: str = "bc", scale: float = 1.0, seed: int = 0
    ) -> Tensor:
        """Actions :math:`(B, A)` for raw states :math:`(B, S)` by ``method`` at ``scale``
        (see :mod:`experiments.rl.methods`), from a generator seeded by ``seed``."""
        if method not in self.methods:
            raise ValueError(f"method must be one of {self.methods} (trained), got {method!r}")
        array = np.asarray(states, np.float32)
        if array.ndim != 2 or array.shape[1] != self.state_dim:
            raise ValueError(
                f"states must have shape (B, {self.state_dim}), got {tuple(array.shape)}"
            )
        if not np.isfinite(array).all():
            raise ValueError("states must be finite")
        if self.standardiser is not None:
            array = self.standardiser(array)
        return act(self.settings, method, scale, self.trained, torch.from_numpy(array), seed)


def save(
    folder: str | Path,
    trained: Trained,
    settings: Settings,
    dataset: str,
    standardiser: Standardiser | None = None,
    card: str = "",
) -> Path:
    """Writes every trained network, ``policy.json`` and the card ``README.md`` (``card``
    is added to it) into ``folder``; the manifest is written last."""
    folder = Path(folder)
    networks = {f.name: getattr(trained, f.name) for f in fields(Trained)}
    written = {name: f"{name}.safetensors" for name, net in networks.items() if net is not None}
    for name, file in written.items():
        weights.save(networks[name], folder / file)
    manifest: dict[str, Any] = {
        "dataset": dataset,
        "settings": settings.to_dict(),
        "networks": written,
        "standardiser": None
        if standardiser is None
        else {"mean": standardiser.mean.tolist(), "std": standardiser.std.tolist()},
    }
    lines = [
        f"# Diffusion policy on {dataset}",
        "",
        f"- networks: {', '.join(written)} (safetensors, read by `experiments.rl.saved.load`)",
        f"- training seed {settings.seed}; settings in `{MANIFEST}`",
        "- act: `saved.load(folder).act(states, method, scale, seed)`; methods: "
        + ", ".join(SavedPolicy(trained, settings, dataset).methods),
    ]
    atomic_write_text(folder / "README.md", "\n".join(lines) + "\n" + card)
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2))
    return folder


def load(folder: str | Path) -> SavedPolicy:
    """The policy saved in ``folder`` by :func:`save`.

    Raises:
        FileNotFoundError: if ``folder`` holds no ``policy.json``.
        ValueError: if the manifest or a network file is malformed (the message names it).
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no saved policy ({MANIFEST} is missing)")
    try:
        manifest = json.loads(path.read_text())
        settings = Settings.from_mapping(manifest["settings"])
        files = dict(manifest["networks"])
        dataset = str(manifest["dataset"])
        stats = manifest["standardiser"]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a saved policy's manifest: {error}") from error
    unknown = sorted(set(files) - {f.name for f in fields(Trained)})
    if unknown or "prior" not in files or "q" not in files:
        raise ValueError(f"{path} names unknown networks {unknown} or lacks the prior and q")
    networks = {name: weights.read(folder / file) for name, file in files.items()}
    standardiser = None
    if stats is not None:
        standardiser = Standardiser(
            np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
        )
    return SavedPolicy(Trained(**networks), settings, dataset, standardiser)
