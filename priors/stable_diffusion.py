r"""Saved diffusers Stable Diffusion pipelines (1.x / 2.x and 3) as latent priors with text
prompts.

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

:func:`load_stable_diffusion_3` reads a folder written by ``StableDiffusion3Pipeline.
save_pretrained`` (the flow transformer, the VAE, the two CLIP text encoders and, optionally,
T5) into a latent prior whose latent denoiser is a flow-matching prior
(:class:`~priors.FlowDenoiser` on the :class:`~priors.RectifiedSchedule`: the transformer's
output at timestep :math:`1000\,t` is the velocity :math:`\epsilon - x`), conditioned by
``prompt_embeds`` and ``pooled_prompt_embeds``, which ``prior.prompts.encode`` makes with the
pipeline's own ``encode_prompt`` (the T5 part zeros where the pipeline has no T5, as the
pipeline does). Classifier-free guidance drops both keywords together:
``guided.ComposableFree(prior, [prior.prompts.encode(prompt)], [scale], null=prior.null)``.

:func:`diffusers_times` gives the time grid of a scheduler after ``set_timesteps``, so that a
sampler walks the pipeline's own steps: for a DDPM-family scheduler its timesteps in our time,
then its final level; for the flow-matching Euler scheduler its (shifted) sigmas, which are
our times on the rectified schedule. Our DDIM on it reproduces ``StableDiffusionPipeline``
with its DDIM scheduler, and ``StableDiffusion3Pipeline`` with its ``FlowMatchEulerDiscrete
Scheduler`` and time shift (DDIM with :math:`\eta = 0` is Euler's method on the velocity ODE),
each with classifier-free guidance on prompts (tested on tiny pipelines built and saved by the
tests).

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
from priors.flow import FlowDenoiser
from priors.latent import LatentPrior
from priors.schedules import DiscreteSchedule, RectifiedSchedule

__all__ = [
    "DiffusersAutoencoder",
    "PipelinePrompts",
    "TextPrompts",
    "diffusers_times",
    "load_stable_diffusion",
    "load_stable_diffusion_3",
]

_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_PARTS_3 = (
    "transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
    "scheduler",
)  # fmt: skip


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


def _prompt_list(prompts: str | Sequence[str]) -> list[str]:
    """A prompt or a non-empty sequence of prompts as a list of strings (else a TypeError)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or not prompts:
        raise TypeError("prompts must be a string or a non-empty list of strings")
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be strings")
    return list(prompts)


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
        prompts = _prompt_list(prompts)
        tokens = self.tokenizer(
            prompts,
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


class PipelinePrompts(nn.Module):
    r"""Prompts to the conditions of a pipeline with several text encoders (SD3), through the
    pipeline's own ``encode_prompt``: :meth:`encode` returns ``{"prompt_embeds": (B, L, D),
    "pooled_prompt_embeds": (B, P)}``."""

    def __init__(self, pipeline: Any) -> None:
        super().__init__()
        self.pipeline = pipeline

    @torch.no_grad()
    def encode(self, prompts: str | Sequence[str]) -> dict[str, Tensor]:
        """The conditions of ``prompts`` (a string or a list of strings)."""
        prompts = _prompt_list(prompts)
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompts, None, None, do_classifier_free_guidance=False
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}


def diffusers_times(scheduler: Any) -> Tensor:
    r"""The time grid (float64, decreasing) of a diffusers scheduler after its
    ``set_timesteps`` (see the module). For a DDPM-family scheduler timestep :math:`k` is our
    :math:`t = (k + 1) / N` (:class:`~priors.schedules.DiscreteSchedule`), and the last step
    goes where the scheduler's goes, clean data (:math:`t = 0`) when its ``set_alpha_to_one``
    is true (or it has none) and the first trained level (:math:`t = 1 / N`) otherwise. For a
    flow-matching scheduler (one with ``sigmas`` and a ``shift``) the grid is its sigmas, final
    0 included."""
    if getattr(scheduler.config, "shift", None) is not None and hasattr(scheduler, "sigmas"):
        sigmas = torch.as_tensor(scheduler.sigmas, dtype=torch.float64)
        if sigmas.numel() < 2:
            raise ValueError("the scheduler has no sigmas: call its set_timesteps first")
        return sigmas
    steps = int(scheduler.config.num_train_timesteps)
    timesteps = torch.as_tensor(scheduler.timesteps, dtype=torch.float64)
    if timesteps.numel() < 1:
        raise ValueError("the scheduler has no timesteps: call its set_timesteps first")
    final = 0.0 if getattr(scheduler.config, "set_alpha_to_one", True) else 1.0 / steps
    return torch.cat([(timesteps + 1) / steps, torch.tensor([final], dtype=torch.float64)])


def _check_parts(directory: Path, parts: Sequence[str], writer: str) -> None:
    missing = [part for part in parts if not (directory / part).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a saved {writer} pipeline: it has no {missing} folder(s) "
            f"({writer}Pipeline.save_pretrained writes {list(parts)})"
        )


def _read_pipeline(cls: Any, directory: Path, optional: Sequence[str]) -> Any:
    """A saved pipeline of class ``cls`` from ``directory`` (safetensors weights; the
    ``optional`` parts the folder does not hold passed as None), its modules frozen in eval
    mode; an unreadable folder raises a ``ValueError`` naming it."""
    absent = {part: None for part in optional if not (directory / part).is_dir()}
    try:
        pipeline = cls.from_pretrained(directory, use_safetensors=True, **absent)
    except (OSError, ValueError) as error:
        raise ValueError(f"{directory} is not a readable diffusers pipeline: {error}") from error
    for module in pipeline.components.values():
        if isinstance(module, nn.Module):
            module.eval().requires_grad_(False)
    return pipeline


def _image_size(size: int | tuple[int, int] | None, side: Any, factor: int) -> tuple[int, int]:
    if size is None:
        sides = (side, side) if isinstance(side, int) else tuple(side)
        return sides[0] * factor, sides[1] * factor
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


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
    _check_parts(directory, _PARTS, "StableDiffusion")
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
    autoencoder = DiffusersAutoencoder(vae, _image_size(size, unet.config.sample_size, factor))

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


def load_stable_diffusion_3(
    directory: str | Path, size: int | tuple[int, int] | None = None
) -> LatentPrior:
    """A saved Stable Diffusion 3 pipeline as a :class:`~priors.LatentPrior` whose latent
    denoiser is a flow-matching prior, with text prompts (see the module).

    Arguments:
        directory: The folder ``StableDiffusion3Pipeline.save_pretrained`` wrote (T5 may be
            absent).
        size: The image side, or (height, width); None for the pipeline's default, the
            transformer's ``sample_size`` times the VAE's down-sampling.
    """
    from diffusers import StableDiffusion3Pipeline

    directory = Path(directory)
    _check_parts(directory, _PARTS_3, "StableDiffusion3")
    optional = ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor")
    pipeline = _read_pipeline(StableDiffusion3Pipeline, directory, optional)
    transformer, vae = pipeline.transformer, pipeline.vae
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    autoencoder = DiffusersAutoencoder(
        vae, _image_size(size, transformer.config.sample_size, factor)
    )

    def velocity(
        x_t: Tensor,
        t: Tensor,
        prompt_embeds: Tensor | None = None,
        pooled_prompt_embeds: Tensor | None = None,
    ) -> Tensor:
        if prompt_embeds is None or pooled_prompt_embeds is None:
            raise TypeError(
                "this Stable Diffusion 3 prior needs the conditions prompt_embeds and "
                "pooled_prompt_embeds (prior.prompts.encode(prompts); prior.null for the "
                "unconditional)"
            )
        dtype = next(transformer.parameters()).dtype
        timestep = (t * 1000).to(x_t.device, dtype).expand(x_t.shape[0])
        out = transformer(
            hidden_states=x_t.to(dtype),
            timestep=timestep,
            encoder_hidden_states=prompt_embeds.to(x_t.device, dtype),
            pooled_projections=pooled_prompt_embeds.to(x_t.device, dtype),
        ).sample
        return out.to(x_t.dtype)

    latent = FlowDenoiser(velocity, RectifiedSchedule(), autoencoder.latent_shape)
    latent.model = transformer  # registered, so .to(device) moves it
    prior = LatentPrior(autoencoder, latent)
    prior.prompts = PipelinePrompts(pipeline)
    prior.null = prior.prompts.encode("")
    return prior
