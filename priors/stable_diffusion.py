r"""Saved diffusers Stable Diffusion pipelines (1.x / 2.x) as latent priors with text prompts.

:func:`load_stable_diffusion` reads a folder written by ``StableDiffusionPipeline.
save_pretrained`` (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``; the
weights from safetensors only, nothing downloaded) and returns a
:class:`~priors.LatentPrior`:

- its **autoencoder** is the pipeline's ``AutoencoderKL`` (:class:`DiffusersAutoencoder`):
  :math:`z = s\,(\mu_E(x) - b)` with the VAE's ``scaling_factor`` :math:`s` and
  ``shift_factor`` :math:`b` (0 for SD 1.x / 2.x), the mean of the encoder's distribution
  (the pipelines' img2img draws from it instead), and :math:`D(z) = \text{decode}(z / s + b)`;
  images in [-1, 1], as everywhere in the package;
- its **latent denoiser** is the ``UNet2DConditionModel`` on the scheduler's
  :math:`\bar\alpha` table (a :class:`~priors.adapters.DiscreteNetworkDenoiser`, with the
  scheduler's ``prediction_type``), conditioned by the keyword ``prompt_embeds`` (the text
  encoder's last hidden state, :math:`(B, L, D)`), which :meth:`TextPrompts.encode` makes from
  prompts exactly as the pipeline's ``encode_prompt`` does (padding to the tokenizer's length,
  no clip skip);
- ``prior.prompts`` is that :class:`TextPrompts`, and ``prior.null`` the null condition of
  classifier-free guidance, the empty prompt's embedding (the pipeline's unconditional pass):
  ``guided.ClassifierFree(prior, scale, null=prior.null)`` guides on prompts as the pipeline
  does.

:func:`diffusers_times` gives the time grid of a DDPM-family scheduler after
``set_timesteps`` (its timesteps in our time, then its final level), so that a sampler walks
the pipeline's own steps: our DDIM on it reproduces ``StableDiffusionPipeline`` with its
DDIM scheduler (tested on a tiny pipeline built and saved by the test).

References:
    | High-Resolution Image Synthesis with Latent Diffusion Models (Rombach et al., 2022)
    | https://arxiv.org/abs/2112.10752
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from torch import Tensor, nn

from priors.adapters import DiscreteNetworkDenoiser
from priors.autoencoder import Autoencoder
from priors.latent import LatentPrior
from priors.schedules import DiscreteSchedule

__all__ = ["DiffusersAutoencoder", "TextPrompts", "diffusers_times", "load_stable_diffusion"]

_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class DiffusersAutoencoder(Autoencoder):
    r"""A diffusers VAE (``AutoencoderKL``) as an :class:`~priors.Autoencoder` (see the module).

    Arguments:
        vae: The VAE; its ``config`` gives ``latent_channels``, ``block_out_channels`` (the
            down-sampling factor :math:`2^{n - 1}`), ``scaling_factor`` and ``shift_factor``.
        size: The image side (height, width) it encodes and decodes.
    """

    def __init__(self, vae: nn.Module, size: tuple[int, int]) -> None:
        config = vae.config
        factor = 2 ** (len(config.block_out_channels) - 1)
        height, width = size
        if height % factor or width % factor:
            raise ValueError(
                f"the image side {size} must be a multiple of the VAE's down-sampling {factor}"
            )
        channels = config.in_channels
        super().__init__(
            (channels, height, width), (config.latent_channels, height // factor, width // factor)
        )
        self.vae = vae
        self.scale = float(config.scaling_factor)
        self.shift = float(getattr(config, "shift_factor", None) or 0.0)

    def apply_encoder(self, x: Tensor) -> Tensor:
        dtype = next(self.vae.parameters()).dtype
        mean = self.vae.encode(x.to(dtype)).latent_dist.mean
        return ((mean - self.shift) * self.scale).to(x.dtype)

    def apply_decoder(self, z: Tensor) -> Tensor:
        dtype = next(self.vae.parameters()).dtype
        return self.vae.decode((z / self.scale + self.shift).to(dtype)).sample.to(z.dtype)


class TextPrompts(nn.Module):
    r"""Prompts to ``prompt_embeds`` with a pipeline's CLIP tokenizer and text encoder, as its
    ``encode_prompt``: tokens padded (and truncated) to the tokenizer's ``model_max_length``,
    the encoder's last hidden state (with the attention mask only where the encoder's config
    asks for it)."""

    def __init__(self, tokenizer: Any, text_encoder: nn.Module) -> None:
        super().__init__()
        self.tokenizer, self.text_encoder = tokenizer, text_encoder

    @torch.no_grad()
    def encode(self, prompts: str | Sequence[str]) -> Tensor:
        r"""The embeddings of ``prompts`` (a string or a list of strings), :math:`(B, L, D)`."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, Sequence) or not prompts:
            raise TypeError("prompts must be a string or a non-empty list of strings")
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be strings")
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask
        device = next(self.text_encoder.parameters()).device
        ids = tokens.input_ids.to(device)
        return self.text_encoder(ids, attention_mask=None if mask is None else mask.to(device))[0]


def diffusers_times(scheduler: Any) -> Tensor:
    r"""The time grid (float64, decreasing) of a DDPM-family diffusers scheduler after its
    ``set_timesteps``: timestep :math:`k` is our :math:`t = (k + 1) / N`
    (:class:`~priors.schedules.DiscreteSchedule`), and the last step goes where the
    scheduler's goes, clean data (:math:`t = 0`) when its ``set_alpha_to_one`` is true (or it
    has none) and the first trained level (:math:`t = 1 / N`) otherwise."""
    steps = int(scheduler.config.num_train_timesteps)
    timesteps = torch.as_tensor(scheduler.timesteps, dtype=torch.float64)
    if timesteps.numel() < 1:
        raise ValueError("the scheduler has no timesteps: call its set_timesteps first")
    final = 0.0 if getattr(scheduler.config, "set_alpha_to_one", True) else 1.0 / steps
    return torch.cat([(timesteps + 1) / steps, torch.tensor([final], dtype=torch.float64)])


def load_stable_diffusion(
    directory: str | Path, size: int | tuple[int, int] | None = None
) -> LatentPrior:
    """A saved Stable Diffusion pipeline as a :class:`~priors.LatentPrior` with text prompts
    (see the module).

    Arguments:
        directory: The folder ``StableDiffusionPipeline.save_pretrained`` wrote.
        size: The image side, or (height, width); None for the pipeline's default, the UNet's
            ``sample_size`` times the VAE's down-sampling.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    directory = Path(directory)
    missing = [part for part in _PARTS if not (directory / part).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a saved Stable Diffusion pipeline: it has no {missing} "
            f"folder(s) (StableDiffusionPipeline.save_pretrained writes {list(_PARTS)})"
        )
    try:
        unet = UNet2DConditionModel.from_pretrained(directory / "unet", use_safetensors=True)
        vae = AutoencoderKL.from_pretrained(directory / "vae", use_safetensors=True)
        text_encoder = CLIPTextModel.from_pretrained(
            directory / "text_encoder", use_safetensors=True
        )
        tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer")
        scheduler = DDPMScheduler.from_pretrained(directory / "scheduler")
    except (OSError, ValueError) as error:
        raise ValueError(f"{directory} is not a readable diffusers pipeline: {error}") from error
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if size is None:
        side = unet.config.sample_size
        size = (side, side) if isinstance(side, int) else tuple(side)
        size = (size[0] * factor, size[1] * factor)
    elif isinstance(size, int):
        size = (size, size)
    autoencoder = DiffusersAutoencoder(vae, (int(size[0]), int(size[1])))

    def network(x_t: Tensor, timestep: Tensor, prompt_embeds: Tensor | None = None) -> Tensor:
        if prompt_embeds is None:
            raise TypeError(
                "this Stable Diffusion prior needs the condition prompt_embeds "
                "(prior.prompts.encode(prompts); prior.null for the unconditional)"
            )
        embeds = prompt_embeds.to(x_t.device, x_t.dtype)
        return unet(x_t, timestep, encoder_hidden_states=embeds).sample

    latent = DiscreteNetworkDenoiser(
        network,
        DiscreteSchedule(scheduler.alphas_cumprod.double()),
        scheduler.config.prediction_type,
        autoencoder.latent_shape,
        takes=("prompt_embeds",),
    )
    latent.model = unet  # registered, so .to(device) moves it
    prior = LatentPrior(autoencoder, latent)
    prior.prompts = TextPrompts(tokenizer, text_encoder)
    prior.null = {"prompt_embeds": prior.prompts.encode("")}
    return prior
