r"""Published checkpoints as our denoisers, and our denoisers as deepinv denoisers.

- :func:`load_adm`: a guided-diffusion / ADM checkpoint (e.g. the FFHQ 256 file of DPS,
  ``ffhq_10m.pt``) through deepinv's ``DiffUNet``: linear-beta schedule of 1000 steps,
  :math:`\epsilon` prediction (the learned-variance channels are dropped), images in [-1, 1].
- :func:`load_diffusers`: a diffusers ``UNet2DModel`` with its scheduler, from a local
  directory saved by ``DDPMPipeline.save_pretrained`` (``unet/`` and ``scheduler/``): the
  scheduler's :math:`\bar\alpha` table becomes a :class:`~priors.schedules.DiscreteSchedule`
  and its ``prediction_type`` (``epsilon``, ``v_prediction``, ``sample``) is honoured.
- :class:`DeepinvDenoiser`: any of our denoisers as a deepinv denoiser
  :math:`D(x, \sigma)` on images in [0, 1], so that deepinv's DPS, DDRM and DiffPIR run on our
  priors.

Both loaders map our time to the checkpoint's timestep as in
:class:`~priors.schedules.DiscreteSchedule`: step :math:`n \in \{1..N\}`, index
:math:`n - 1` of the timestep embedding, sits at :math:`t = n / N` (fractional in between,
0 below the first step). Weights are read with ``weights_only`` / safetensors: loading never
unpickles code. deepinv and diffusers are imported only when these are used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from torch import Tensor, nn

from priors.denoiser import Denoiser
from priors.denoising import denoise
from priors.schedules import DiscreteSchedule, LinearSchedule, Schedule
from priors.tweedie import x0_from_eps, x0_from_v
from priors.weights import load_state_strict

__all__ = [
    "DeepinvDenoiser",
    "DiscreteNetworkDenoiser",
    "adm_is_large",
    "load_adm",
    "load_diffusers",
    "read_state",
]


def _x0_from_sample(x_t: Tensor, x0: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    return x0


#: How a checkpoint's declared prediction becomes the posterior mean.
PREDICTIONS: dict[str, Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]] = {
    "epsilon": x0_from_eps,
    "v_prediction": x0_from_v,
    "sample": _x0_from_sample,
}


class DiscreteNetworkDenoiser(Denoiser):
    r"""A network of a discrete-time checkpoint, ``network(x_t, timestep, **cond)``, as a
    denoiser.

    Arguments:
        network: Maps :math:`(x_t, \text{timestep})` (timesteps float, shape :math:`(B,)`)
            to the prediction named by ``prediction``, shape of :math:`x_t`.
        schedule: The checkpoint's table.
        prediction: ``epsilon``, ``v_prediction`` or ``sample``.
        shape: One sample's shape :math:`(C, H, W)` (documentation and checks).
        takes: The conditioning keywords the network accepts (others are refused with an
            error that names them; keyword only).
    """

    def __init__(
        self,
        network: Callable[..., Tensor],
        schedule: DiscreteSchedule,
        prediction: str,
        shape: tuple[int, ...],
        *,
        takes: tuple[str, ...] = (),
    ) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(
                f"prediction must be one of {sorted(PREDICTIONS)}, got {prediction!r}"
            )
        super().__init__(schedule)
        self.network = network
        self.prediction = prediction
        self.shape = tuple(shape)
        self.num_classes = 0
        self.takes = tuple(takes)

    def timestep(self, t: Tensor) -> Tensor:
        """The checkpoint's (fractional) timestep of time ``t``."""
        return (t * self.schedule.steps - 1).clamp(min=0)

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        unknown = sorted(k for k in cond if k not in self.takes)
        if unknown:
            raise TypeError(
                f"this checkpoint's network takes no condition {unknown}; it takes "
                f"{list(self.takes) or 'none (an unconditional prior)'}"
            )
        if tuple(x_t.shape[1:2]) != self.shape[:1]:
            raise ValueError(
                f"x_t must have {self.shape[0]} channels, got shape {tuple(x_t.shape)}"
            )
        steps = self.timestep(t.expand(x_t.shape[0])).to(torch.float32)
        out = self.network(x_t.float(), steps, **cond).to(x_t.dtype)
        return PREDICTIONS[self.prediction](x_t, out, *self.schedule(t))


def read_state(path: Path) -> dict[str, Tensor]:
    """A checkpoint's state dict of tensors, from ``.safetensors`` or from a torch file
    read with ``weights_only=True`` (never by unpickling code; a ``{"state_dict": ...}``
    wrapper is opened); the error names ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable checkpoint: {error}") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return state


#: deepinv's two ``DiffUNet`` configurations, by the width of the first convolution.
_ADM_WIDTHS = {128: False, 256: True}  # FFHQ (DPS's checkpoint), ImageNet 256 (large)


def adm_is_large(state: dict[str, Tensor], path: Path) -> bool:
    """Which of deepinv's ``DiffUNet`` configurations a guided-diffusion state dict has,
    from the shape of its first convolution ``input_blocks.0.0.weight`` (128 output channels:
    the FFHQ one; 256: the large ImageNet one); anything else is refused, naming ``path``."""
    first = state.get("input_blocks.0.0.weight")
    if first is None or first.ndim != 4:
        raise ValueError(
            f"{path} has no 4-d input_blocks.0.0.weight: not a guided-diffusion (ADM) state dict"
        )
    width, channels = int(first.shape[0]), int(first.shape[1])
    if width not in _ADM_WIDTHS or channels != 3:
        raise ValueError(
            f"{path}: its first convolution maps {channels} channels to {width}; deepinv's "
            "DiffUNet reads 3 channels into 128 (the FFHQ configuration) or 256 (the large "
            "ImageNet one), so this architecture cannot be loaded"
        )
    return _ADM_WIDTHS[width]


def load_adm(
    path: str | Path, large_model: bool | None = None, image_size: int = 256
) -> DiscreteNetworkDenoiser:
    r"""A guided-diffusion (ADM) checkpoint as a denoiser, through deepinv's ``DiffUNet``.

    Arguments:
        path: The checkpoint (``.pt`` state dict, read with ``weights_only=True``, or
            ``.safetensors``), e.g. DPS's ``ffhq_10m.pt``.
        large_model: deepinv's large configuration (the ImageNet one) instead of the FFHQ
            one; ``None`` infers it from the state dict's shapes (:func:`adm_is_large`). Either
            way every key and shape must then match, or the error lists the mismatches.
        image_size: The side of the images it generates (a state dict does not say it).
    """
    from deepinv.models import DiffUNet

    path = Path(path)
    state = read_state(path)
    if large_model is None:
        large_model = adm_is_large(state, path)
    model = DiffUNet(in_channels=3, out_channels=3, large_model=large_model, pretrained=None)
    load_state_strict(model, state, path)
    model.eval().requires_grad_(False)

    def eps(x_t: Tensor, timestep: Tensor) -> Tensor:
        return model.forward_diffusion(x_t, timestep)[:, :3]

    denoiser = DiscreteNetworkDenoiser(
        eps, LinearSchedule(), "epsilon", (3, image_size, image_size)
    )
    denoiser.model = model  # registered, so .to(device) moves it
    return denoiser


def load_diffusers(directory: str | Path) -> DiscreteNetworkDenoiser:
    """A diffusers ``UNet2DModel`` and its DDPM-family scheduler from a local pipeline
    directory (``unet/`` and ``scheduler/``), read from safetensors only."""
    from diffusers import DDPMScheduler, UNet2DModel

    directory = Path(directory)
    for sub in ("unet", "scheduler"):
        if not (directory / sub).is_dir():
            raise FileNotFoundError(
                f"{directory} has no '{sub}' folder (a saved diffusers pipeline)"
            )
    try:
        unet = UNet2DModel.from_pretrained(directory / "unet", use_safetensors=True)
        scheduler = DDPMScheduler.from_pretrained(directory / "scheduler")
    except (OSError, ValueError) as error:
        raise ValueError(f"{directory} is not a readable diffusers pipeline: {error}") from error
    unet.eval().requires_grad_(False)
    schedule = DiscreteSchedule(scheduler.alphas_cumprod.double())
    prediction = scheduler.config.prediction_type

    def network(x_t: Tensor, timestep: Tensor, label: Tensor | None = None) -> Tensor:
        return unet(x_t, timestep, class_labels=label).sample

    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    denoiser = DiscreteNetworkDenoiser(
        network, schedule, prediction, (unet.config.in_channels, *size), takes=("label",)
    )
    denoiser.model = unet
    denoiser.num_classes = unet.config.num_class_embeds or 0
    return denoiser


class DeepinvDenoiser(nn.Module):
    r"""One of our denoisers as a deepinv denoiser :math:`D(x_{01}, \sigma_{01})`.

    deepinv's images live in [0, 1] with additive noise of standard deviation
    :math:`\sigma_{01}`; in our range that is :math:`x = 2 x_{01} - 1` with noise
    :math:`\sigma = 2 \sigma_{01}`, the variance-exploding level
    :math:`\sigma_t / \alpha_t`. So :math:`t` solves :math:`\lambda_t = -\log \sigma`
    (clamped to the schedule's ends), the input becomes :math:`x_t = \alpha_t x`, and the
    output :math:`(\hat x + 1) / 2`. ``sigma`` may be a float, a 0-dim tensor or one per
    row (any shape with :math:`B` entries); no ``.item()`` is taken, so deepinv can
    differentiate through the call with ``torch.func``.

    Arguments:
        denoiser: Our denoiser.
        cond: Fixed conditioning keywords (e.g. ``label``) passed on every call.
    """

    def __init__(self, denoiser: Denoiser, **cond: Any) -> None:
        super().__init__()
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser must be a priors.Denoiser, got {type(denoiser).__name__}")
        self.denoiser = denoiser
        self.cond = cond

    @property
    def schedule(self) -> Schedule:
        return self.denoiser.schedule

    def forward(self, x: Tensor, sigma: float | Tensor, *args: Any, **kwargs: Any) -> Tensor:
        sigma = 2 * torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        x_hat = denoise(self.denoiser, 2 * x - 1, sigma, **(self.cond | kwargs))
        return (x_hat + 1) / 2
