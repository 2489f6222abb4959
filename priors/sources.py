r"""A prior from what a user names: a shipped name, a weight file or a checkpoint folder.

:func:`from_path` reads ``source`` as, in this order:

- the name of a shipped prior (:func:`priors.available`: ``"digits"``, ``"textures"``);
- a folder holding ``unet/`` and ``scheduler/``: a saved diffusers pipeline
  (:func:`priors.adapters.load_diffusers`);
- a ``.safetensors`` file with this package's metadata (``kind``): one of our denoisers
  (:func:`priors.weights.read`);
- a ``.pt`` / ``.pth`` file, or a ``.safetensors`` file without our metadata: a
  guided-diffusion (ADM) checkpoint (:func:`priors.adapters.load_adm`), read without
  unpickling code. Which of deepinv's two ``DiffUNet`` configurations it has (FFHQ, as DPS's
  checkpoint, or the large ImageNet one) is inferred from the state dict's shapes; the
  side of its images comes from ``<stem>.json`` beside it (``{"image_size": 256}``, the
  default; ``"large_model": true/false`` there overrides the inference), since a state dict
  does not say the size of the images it was trained on.

Anything else is refused with an error that names the source and what is accepted; so is
a weight file that holds something other than a denoiser (a classifier, a critic).
"""

from __future__ import annotations

import json

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import safe_open

import checks

from priors.denoiser import Denoiser
from priors.weights import WEIGHTS, available, load, read

__all__ = ["from_path"]

#: Weight-file kinds that are denoisers.
_DENOISERS = ("denoiser", "latent", "mlp_denoiser")
_ACCEPTED = (
    "a shipped prior name ({names}), a diffusers pipeline folder (unet/ and scheduler/), a "
    ".safetensors file of ours, or a guided-diffusion (ADM) checkpoint (.pt, .pth, "
    ".safetensors)"
)


def _metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error


def _accepted() -> str:
    """What a source may be, with the shipped priors' names (for error messages)."""
    names = [
        n for n in available() if _metadata(WEIGHTS / f"{n}.safetensors").get("kind") in _DENOISERS
    ]
    return _ACCEPTED.format(names=", ".join(names))


def _adm(path: Path) -> Denoiser:
    from priors.adapters import load_adm

    config_path = path.with_suffix(".json")
    config: dict[str, object] = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_path} is not valid JSON: {error}") from error
        unknown = sorted(set(config) - {"large_model", "image_size"})
        if not isinstance(config, dict) or unknown:
            raise ValueError(
                f"{config_path} may hold only 'large_model' (true/false) and 'image_size' "
                f"(an integer); got {unknown or type(config).__name__}"
            )
    large = config.get("large_model")
    if large is not None:
        large = checks.flag(large, f"{config_path.name}: large_model")
    size = checks.integer(config.get("image_size", 256), f"{config_path.name}: image_size", low=1)
    return load_adm(path, large_model=large, image_size=size)


def from_path(source: str | Path) -> Denoiser:
    """The prior ``source`` names (see the module)."""
    if not isinstance(source, str | Path):
        raise TypeError(f"source must be a name or a path, got {type(source).__name__}")
    if isinstance(source, str) and source in available():
        return load(source)  # refuses a shipped classifier, naming it
    path = Path(source)
    accepted = _accepted()
    if path.is_dir():
        if (path / "unet").is_dir() and (path / "scheduler").is_dir():
            from priors.adapters import load_diffusers

            return load_diffusers(path)
        raise ValueError(
            f"prior {str(source)!r} is a folder without unet/ and scheduler/; give {accepted}"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"prior {str(source)!r} is neither a shipped name, a file nor a folder; give "
            f"{accepted}"
        )
    if path.suffix == ".safetensors":
        kind = _metadata(path).get("kind")
        if kind is None:
            return _adm(path)
        if kind not in _DENOISERS:
            raise ValueError(f"{path} holds a {kind}, not a denoiser")
        module = read(path)
        assert isinstance(module, Denoiser)
        return module
    if path.suffix in (".pt", ".pth"):
        return _adm(path)
    raise ValueError(f"prior {str(source)!r} has an unknown kind of file; give {accepted}")
