r"""A saved diffusers Flux pipeline as a latent flow-matching prior with text prompts.

:func:`load_flux` reads a folder written by ``FluxPipeline.save_pretrained`` (``transformer/``,
``vae/``, ``text_encoder/`` and ``tokenizer/`` (CLIP), ``text_encoder_2/`` and
``tokenizer_2/`` (T5), ``scheduler/``; weights from safetensors only, nothing downloaded) and
returns a :class:`~priors.LatentPrior`:

- its **autoencoder** is the pipeline's ``AutoencoderKL``
  (:class:`~priors.stable_diffusion.DiffusersAutoencoder`, with Flux's ``scaling_factor`` and
  ``shift_factor``);
- its **latent denoiser** is the ``FluxTransformer2DModel`` as a flow-matching prior
  (:class:`~priors.FlowDenoiser` on the :class:`~priors.RectifiedSchedule`). Our latents keep
  the VAE's layout :math:`(C, h, w)`; the velocity packs them into the transformer's
  :math:`2 \times 2` patch tokens :math:`(hw/4, 4C)` with their position ids, calls the
  transformer at timestep :math:`t` (the pipeline passes its sigma, which is our time) and
  unpacks the output, the velocity :math:`\epsilon - x`, exactly as ``FluxPipeline`` packs and
  unpacks (``_pack_latents`` / ``_unpack_latents``);
- its conditions are ``prompt_embeds`` (T5) and ``pooled_prompt_embeds`` (CLIP's pooled
  output), which ``prior.prompts.encode`` makes with the pipeline's own ``encode_prompt``, and
  optionally ``guidance``, the **distilled guidance scale** that FLUX.1 [dev] takes as an
  input (a number or one per row; the loader's ``guidance_scale``, the pipeline's 3.5, when
  absent; ignored by a transformer without ``guidance_embeds``, such as FLUX.1 [schnell]).

FLUX.1 [dev] is guidance-distilled: one pass with the ``guidance`` input stands in for
classifier-free guidance, so the pipeline's default makes one network evaluation per step.
``prior.null`` is the empty prompt's conditions: ``guided.ComposableFree(prior,
[prior.prompts.encode(prompt)], [scale], null=prior.null)`` is the pipeline's "true CFG"
(``true_cfg_scale`` with ``negative_prompt=""``), two evaluations per step.

**Resolution-dependent shift.** The pipeline spaces its sigmas as :math:`\sigma_i = 1 - i / N`
(:math:`i < N`, then 0) and shifts them as :math:`e^\mu / (e^\mu + 1/\sigma - 1)`, with
:math:`\mu` linear in the number of latent tokens :math:`hw/4` (``calculate_shift``: from
``base_shift`` at ``base_image_seq_len`` tokens to ``max_shift`` at ``max_image_seq_len``).
That is SD3's shift :math:`s \sigma / (1 + (s - 1) \sigma)` with :math:`s = e^\mu`, so
``prior.shift`` is :math:`e^\mu` for the prior's image size and
``guided.time_grid(N, "shifted", shift=prior.shift)`` is the pipeline's grid of :math:`N`
steps (tested against the pipeline's scheduler). A scheduler configured with a terminal
stretch, Karras, exponential or beta sigmas or inverted sigmas spaces its grid otherwise:
``prior.shift`` is then ``None`` (so ``time_grid`` refuses it) and
:func:`~priors.stable_diffusion.diffusers_times` of the scheduler after the pipeline's
``set_timesteps`` gives its grid.

References:
    | FLUX.1 (Black Forest Labs, 2024) https://github.com/black-forest-labs/flux
    | Scaling Rectified Flow Transformers for High-Resolution Image Synthesis (Esser et al.,
    | 2024) https://arxiv.org/abs/2403.03206
"""

from __future__ import annotations

import math

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from torch import Tensor, nn

import checks

from priors.flow import FlowDenoiser
from priors.latent import LatentPrior
from priors.schedules import RectifiedSchedule
from priors.stable_diffusion import (
    DiffusersAutoencoder,
    _check_parts,
    _image_size,
    _prompt_list,
    _read_pipeline,
)

__all__ = ["FluxPrompts", "load_flux", "pack", "unpack"]

_PARTS = (
    "transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
    "scheduler",
)  # fmt: skip
#: Scheduler options under which the pipeline's grid is not the shifted uniform grid.
_OTHER_GRIDS = (
    "shift_terminal", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
    "invert_sigmas",
)  # fmt: skip


def pack(z: Tensor) -> Tensor:
    r"""Latents :math:`(B, C, h, w)` as Flux's :math:`2 \times 2` patch tokens
    :math:`(B, hw/4, 4C)`, in ``FluxPipeline._pack_latents``'s order."""
    b, c, h, w = z.shape
    z = z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return z.reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack(tokens: Tensor, h: int, w: int) -> Tensor:
    r"""The inverse of :func:`pack`: tokens :math:`(B, hw/4, 4C)` to latents
    :math:`(B, C, h, w)`."""
    b, _, channels = tokens.shape
    z = tokens.view(b, h // 2, w // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return z.reshape(b, channels // 4, h, w)


def _image_ids(h: int, w: int) -> Tensor:
    r"""The position ids of the :math:`(h/2)(w/2)` latent tokens, :math:`(hw/4, 3)`: 0, row,
    column (``FluxPipeline._prepare_latent_image_ids``)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


class FluxPrompts(nn.Module):
    r"""Prompts to a Flux pipeline's conditions through its own ``encode_prompt``:
    :meth:`encode` returns ``{"prompt_embeds": (B, L, D), "pooled_prompt_embeds": (B, P)}``
    (T5 tokens padded to ``max_sequence_length``)."""

    def __init__(self, pipeline: Any, max_sequence_length: int) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.max_sequence_length = max_sequence_length

    @torch.no_grad()
    def encode(self, prompts: str | Sequence[str]) -> dict[str, Tensor]:
        """The conditions of ``prompts`` (a string or a list of strings)."""
        prompts = _prompt_list(prompts)
        embeds, pooled, _ = self.pipeline.encode_prompt(
            prompts, None, max_sequence_length=self.max_sequence_length
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}


def _shift(scheduler: Any, tokens: int) -> float | None:
    r""":math:`e^\mu` (or :math:`\mu` for a linear time shift) for ``tokens`` latent tokens,
    the scheduler's fixed ``shift`` without dynamic shifting, or None where its grid is not a
    shifted uniform grid (see the module)."""
    config = scheduler.config
    if any(config.get(name) for name in _OTHER_GRIDS):
        return None
    if not config.get("use_dynamic_shifting"):
        return float(config.shift)
    base, top = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    low, high = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    mu = low + (high - low) * (tokens - base) / (top - base)
    return mu if config.get("time_shift_type", "exponential") == "linear" else math.exp(mu)


def load_flux(
    directory: str | Path,
    size: int | tuple[int, int] | None = None,
    *,
    guidance_scale: float = 3.5,
    max_sequence_length: int = 512,
) -> LatentPrior:
    """A saved Flux pipeline as a :class:`~priors.LatentPrior` whose latent denoiser is a
    flow-matching prior, with text prompts and the distilled guidance input (see the module).

    Arguments:
        directory: The folder ``FluxPipeline.save_pretrained`` wrote.
        size: The image side, or (height, width), a multiple of twice the VAE's
            down-sampling; None for the pipeline's default (its ``default_sample_size``, 128,
            times the down-sampling: 1024 for FLUX.1).
        guidance_scale: The distilled guidance scale used where a call passes no
            ``guidance`` (the pipeline's default 3.5).
        max_sequence_length: The T5 prompt length (the pipeline's default 512).
    """
    from diffusers import FluxPipeline

    directory = Path(directory)
    _check_parts(directory, _PARTS, "Flux")
    default_scale = checks.number(guidance_scale, "guidance_scale")
    length = checks.integer(max_sequence_length, "max_sequence_length", low=1)
    # the IP-adapter image encoder is optional
    pipeline = _read_pipeline(FluxPipeline, directory, ("image_encoder", "feature_extractor"))
    transformer, vae = pipeline.transformer, pipeline.vae
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    height, width = _image_size(size, pipeline.default_sample_size, factor)
    if height % (2 * factor) or width % (2 * factor):
        raise ValueError(
            f"size {(height, width)} must be a multiple of {2 * factor} in each side (the VAE's "
            "down-sampling times Flux's 2 x 2 patches)"
        )
    autoencoder = DiffusersAutoencoder(vae, (height, width))
    _, h, w = autoencoder.latent_shape
    if 4 * autoencoder.latent_shape[0] != transformer.config.in_channels:
        raise ValueError(
            f"the transformer takes {transformer.config.in_channels} channels per token, not 4 x "
            f"the VAE's {autoencoder.latent_shape[0]} latent channels: not a Flux pipeline"
        )
    image_ids = _image_ids(h, w)
    distilled = bool(transformer.config.guidance_embeds)

    def velocity(
        x_t: Tensor,
        t: Tensor,
        prompt_embeds: Tensor | None = None,
        pooled_prompt_embeds: Tensor | None = None,
        guidance: Tensor | float | None = None,
    ) -> Tensor:
        if prompt_embeds is None or pooled_prompt_embeds is None:
            raise TypeError(
                "this Flux prior needs the conditions prompt_embeds and pooled_prompt_embeds "
                "(prior.prompts.encode(prompts); prior.null for the empty prompt)"
            )
        dtype = next(transformer.parameters()).dtype
        device, rows = x_t.device, x_t.shape[0]
        scale = None
        if distilled:
            if guidance is None:
                scale = torch.tensor(default_scale)
            elif isinstance(guidance, Tensor):  # one per row, or one for all
                scale = checks.finite(checks.real_tensor(guidance, "guidance"), "guidance")
            else:
                scale = torch.tensor(checks.number(guidance, "guidance"))
            scale = scale.to(device, torch.float32).reshape(-1).expand(rows)
        out = transformer(
            hidden_states=pack(x_t.to(dtype)),
            timestep=torch.as_tensor(t).to(device, dtype).expand(rows),
            guidance=scale,
            pooled_projections=pooled_prompt_embeds.to(device, dtype),
            encoder_hidden_states=prompt_embeds.to(device, dtype),
            txt_ids=torch.zeros(prompt_embeds.shape[1], 3, device=device, dtype=dtype),
            img_ids=image_ids.to(device, dtype),
            return_dict=False,
        )[0]
        return unpack(out, h, w).to(x_t.dtype)

    latent = FlowDenoiser(velocity, RectifiedSchedule(), autoencoder.latent_shape)
    latent.model = transformer  # registered, so .to(device) moves it
    prior = LatentPrior(autoencoder, latent)
    prior.prompts = FluxPrompts(pipeline, length)
    prior.null = prior.prompts.encode("")
    prior.shift = _shift(pipeline.scheduler, (h // 2) * (w // 2))
    return prior
