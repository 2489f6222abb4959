r"""Weights we ship, and the one way to read and write them: safetensors files whose
metadata holds the architecture, so loading is one call and never unpickles code.

A weight file ``<name>.safetensors`` has the metadata keys ``kind`` (``denoiser`` or
``classifier``: a U-Net; ``autoencoder``: a :class:`~priors.conv_autoencoder.ConvAutoencoder`;
``latent``: a :class:`~priors.LatentPrior` of both, config ``{"autoencoder": ...,
"denoiser": ...}``; ``mlp_denoiser``, ``critic`` or ``gaussian_policy``: the networks of
diffusion policies; ``contrastive``: a :class:`~priors.ContrastiveLikelihood`), ``config``
(JSON: the network's arguments, the schedule, the data shape, the classes; for U-Net
denoisers what the network predicts, ``"v"`` or ``"flow"``, ``"v"`` when absent) and
``sha256``, and its tensors are the module's ``state_dict``.
The hash (:func:`content_hash`) covers every tensor's name, dtype, shape and bytes and the
other metadata, so a flipped bit in a weight or an edited schedule is refused on load rather
than sampled from. A card ``<name>.md`` beside it says what data, split and command produced
it and what it scores.

:func:`load` and :func:`load_classifier` read the shipped files in ``priors/weights``;
:func:`read` reads any file written by :func:`save`.
"""

from __future__ import annotations

import hashlib
import json

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import nn

from priors.classifier import Classifier
from priors.contrastive import ContrastiveLikelihood
from priors.conv_autoencoder import ConvAutoencoder
from priors.critic import Critic
from priors.files import atomic_write
from priors.gaussian_policy import GaussianPolicy
from priors.latent import LatentPrior
from priors.mlp import MLP, MLPDenoiser
from priors.network import UNetDenoiser
from priors.schedules import (
    CosineSchedule,
    EDMSchedule,
    LinearSchedule,
    RectifiedSchedule,
    Schedule,
)
from priors.unet import UNet

__all__ = [
    "WEIGHTS",
    "available",
    "check_hash",
    "content_hash",
    "describe",
    "load",
    "load_classifier",
    "load_state_strict",
    "read",
    "save",
]

#: The folder of the shipped weight files.
WEIGHTS = Path(__file__).parent / "weights"

_SCHEDULES: dict[str, type[Schedule]] = {
    "cosine": CosineSchedule,
    "linear": LinearSchedule,
    "edm": EDMSchedule,
    "rectified": RectifiedSchedule,
}


def _schedule(config: dict[str, Any]) -> Schedule:
    config = dict(config)
    name = config.pop("name")
    if name not in _SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; known: {sorted(_SCHEDULES)}")
    return _SCHEDULES[name](**config)


def build(kind: str, config: dict[str, Any]) -> nn.Module:
    """The (untrained) module a weight file's metadata describes."""
    if kind == "denoiser":
        network = UNet(**config["network"])
        prediction = config.get("prediction", "v")  # files before flow priors: v
        return UNetDenoiser(network, _schedule(config["schedule"]), config["shape"], prediction)
    if kind == "autoencoder":
        return ConvAutoencoder(**config)
    if kind == "latent":
        return LatentPrior(
            build("autoencoder", config["autoencoder"]), build("denoiser", config["denoiser"])
        )
    if kind == "classifier":
        encoder = UNet(**config["network"], encoder_only=True)
        schedule = None if config.get("schedule") is None else _schedule(config["schedule"])
        return Classifier(encoder, config["num_classes"], schedule)
    if kind == "mlp_denoiser":
        return MLPDenoiser(MLP(**config["network"]), _schedule(config["schedule"]))
    if kind == "critic":
        config = dict(config)
        schedule = config.pop("schedule", None)
        return Critic(**config, schedule=None if schedule is None else _schedule(schedule))
    if kind == "gaussian_policy":
        return GaussianPolicy(**config)
    if kind == "contrastive":
        return ContrastiveLikelihood(**config)
    raise ValueError(f"unknown weight kind {kind!r}; expected one of {list(KINDS)}")


#: The kinds of module a weight file holds.
KINDS = (
    "denoiser",
    "classifier",
    "autoencoder",
    "latent",
    "mlp_denoiser",
    "critic",
    "gaussian_policy",
    "contrastive",
)


def _schedule_config(schedule: Schedule) -> dict[str, Any]:
    """The config of a schedule with its default parameters (the ones a file can name)."""
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    for name, cls in _SCHEDULES.items():
        if type(schedule) is cls and all(
            torch.equal(a, b) for a, b in zip(schedule(t), cls()(t), strict=True)
        ):
            return {"name": name}
    raise ValueError(
        f"cannot record a {type(schedule).__name__} with non-default parameters; weight files "
        f"name one of {sorted(_SCHEDULES)} with its defaults"
    )


def describe(module: nn.Module) -> tuple[str, dict[str, Any]]:
    """The ``kind`` and ``config`` that rebuild a diffusion-policy network (an
    :class:`~priors.mlp.MLPDenoiser`, a :class:`~priors.critic.Critic` or a
    :class:`~priors.gaussian_policy.GaussianPolicy`), a contrastive surrogate likelihood
    (:class:`~priors.contrastive.ContrastiveLikelihood`) or a
    :class:`~priors.conv_autoencoder.ConvAutoencoder` (with its shape and scale) for
    :func:`save`; U-Nets are described by the training app, which knows their arguments."""
    if isinstance(module, MLPDenoiser):
        return "mlp_denoiser", {
            "network": module.network.arguments,
            "schedule": _schedule_config(module.schedule),
        }
    if isinstance(module, Critic):
        schedule = None if module.schedule is None else _schedule_config(module.schedule)
        return "critic", {**module.arguments, "schedule": schedule}
    if isinstance(module, GaussianPolicy):
        return "gaussian_policy", dict(module.arguments)
    if isinstance(module, ContrastiveLikelihood):
        return "contrastive", dict(module.arguments)
    if isinstance(module, ConvAutoencoder):
        shape = {"shape": list(module.shape)}
        return "autoencoder", {**shape, **module.arguments, "scale": module.scale}
    raise TypeError(
        f"cannot describe a {type(module).__name__}; pass kind and config to save() for it"
    )


def content_hash(
    tensors: Mapping[str, torch.Tensor | np.ndarray], metadata: Mapping[str, str]
) -> str:
    """The SHA-256 of the tensors (names, dtypes, shapes and bytes, in name order) and of
    the metadata other than ``sha256`` itself."""
    digest = hashlib.sha256()
    for key in sorted(k for k in metadata if k != "sha256"):
        digest.update(json.dumps([key, metadata[key]]).encode())
    for name in sorted(tensors):
        value = tensors[name]
        array = value.detach().cpu().contiguous() if isinstance(value, torch.Tensor) else value
        raw = (
            array.reshape(-1).view(torch.uint8).numpy()
            if isinstance(array, torch.Tensor)
            else np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        )
        digest.update(json.dumps([name, str(array.dtype), list(array.shape)]).encode())
        digest.update(raw.tobytes())
    return digest.hexdigest()


def check_hash(
    tensors: Mapping[str, torch.Tensor | np.ndarray], metadata: Mapping[str, str], path: Path
) -> None:
    """Raises a ``ValueError`` naming ``path`` when its ``sha256`` metadata is missing or does
    not match its content (a corrupted or edited file)."""
    stored = metadata.get("sha256")
    if stored is None:
        raise ValueError(
            f"{path} has no content hash (metadata 'sha256'); files written by this package "
            "carry one: write it again with the package's save function"
        )
    if stored != content_hash(tensors, metadata):
        raise ValueError(
            f"{path} does not match its content hash: a tensor or the metadata was changed "
            "after it was written (a corrupted download or an edited file)"
        )


def save(
    module: nn.Module,
    path: str | Path,
    kind: str | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Writes ``module``'s weights and the config that rebuilds it, atomically
    (:func:`priors.files.atomic_write`), after checking that the config rebuilds a module
    the weights fit. Without ``kind`` and ``config``, :func:`describe` supplies them."""
    path = Path(path)
    if kind is None or config is None:
        if kind is not None or config is not None:
            raise ValueError("pass both kind and config, or neither (describe() supplies them)")
        kind, config = describe(module)
    build(kind, config).load_state_dict(module.state_dict())  # the config must fit
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    metadata = {"kind": kind, "config": json.dumps(config, sort_keys=True)}
    metadata["sha256"] = content_hash(tensors, metadata)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def load_state_strict(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Loads ``tensors`` into ``module`` after checking that the keys and shapes match and
    the values are finite; the error names ``path`` and the mismatches."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path} does not match its architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}"
        )
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path} has NaN or Inf in {bad[:5]}")
    module.load_state_dict(tensors)


def read(path: str | Path, kind: str | None = None) -> nn.Module:
    """Rebuilds the module saved in ``path`` (in eval mode, float32, on the CPU).

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file is not a readable safetensors file, lacks the metadata, does
            not match its content hash, is of another ``kind``, or its tensors do not match
            the architecture (the message names the file and the mismatching keys or
            shapes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file {path}")
    try:
        with safe_open(str(path), framework="pt") as f:  # one read: metadata and tensors
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error
    if "kind" not in metadata or "config" not in metadata:
        raise ValueError(f"{path} lacks the 'kind' and 'config' metadata of a weight file")
    check_hash(tensors, metadata, path)
    if kind is not None and metadata["kind"] != kind:
        raise ValueError(f"{path} holds a {metadata['kind']}, not a {kind}")
    try:
        module = build(metadata["kind"], json.loads(metadata["config"]))
    except (TypeError, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} has a config that builds no module: {error}") from error
    load_state_strict(module, tensors, path)
    return module.eval()


def available() -> list[str]:
    """The names of the shipped weight files."""
    return sorted(p.stem for p in WEIGHTS.glob("*.safetensors"))


def load(name: str) -> UNetDenoiser | LatentPrior:
    """A shipped prior by name (``"digits"``, ``"textures"``, ``"natural"``,
    ``"natural-flow"``; a latent prior, kind ``latent``, as a :class:`~priors.LatentPrior`),
    ready to sample."""
    path = WEIGHTS / f"{name}.safetensors"
    if not path.is_file():
        raise ValueError(f"no shipped prior {name!r}; available: {available()}")
    module = read(path)
    if not isinstance(module, UNetDenoiser | LatentPrior):
        raise ValueError(f"{path} holds a {type(module).__name__}, not a denoiser")  # noqa: TRY004
    return module


def load_classifier(name: str, noisy: bool) -> Classifier:
    """The shipped classifier for the data of prior ``name``: noise-conditional
    (``noisy=True``, for classifier guidance) or clean (for evaluation)."""
    stem = f"{name}-classifier{'-noisy' if noisy else ''}"
    path = WEIGHTS / f"{stem}.safetensors"
    if not path.is_file():
        raise ValueError(f"no shipped classifier {stem!r}; available: {available()}")
    return read(path, kind="classifier")
