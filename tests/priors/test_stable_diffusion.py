"""A saved Stable Diffusion pipeline as a latent prior: a tiny random pipeline (UNet, VAE, CLIP
text encoder and a CLIP tokenizer whose vocabulary and merges the test writes) is saved with
``save_pretrained`` and loaded back; our DDIM with classifier-free guidance on prompts walks
the pipeline's own steps and reproduces its latents and images; latent DPS restores through
it; the errors name what is missing or refused. Nothing is downloaded."""

import json
import string

import pytest
import torch

import guided
import operators
import priors

from priors.stable_diffusion import diffusers_times, load_stable_diffusion


def _tokenizer(folder):
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True)
    letters = list(string.ascii_lowercase)
    vocab = {c: i for i, c in enumerate(letters)}
    vocab |= {c + "</w>": len(letters) + i for i, c in enumerate(letters)}
    merges = ["c a", "ca t</w>", "d o", "do g</w>"]
    for merge in merges:
        vocab["".join(merge.split())] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16
    )


def _vae(**extra):
    """A tiny AutoencoderKL: images 3 x 16 x 16 to latents 4 x 8 x 8."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=4, sample_size=16, **extra,
    )  # fmt: skip


def _clip_config(tokenizer, hidden):
    """A tiny CLIP text encoder's configuration for ``tokenizer`` (width ``hidden``)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=hidden, intermediate_size=24,
        num_attention_heads=2, num_hidden_layers=2, vocab_size=len(tokenizer),
        max_position_embeddings=16, projection_dim=hidden,
    )  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny StableDiffusionPipeline (latents 4 x 8 x 8, images 3 x 16 x 16) saved to disk."""
    from diffusers import (
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    root = tmp_path_factory.mktemp("sd")
    tokenizer = _tokenizer(root / "vocabulary")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        attention_head_dim=2, norm_num_groups=4,
    )  # fmt: skip
    vae = _vae()
    config = _clip_config(tokenizer, 16)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=CLIPTextModel(config), tokenizer=tokenizer,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


def test_ddim_with_prompt_guidance_reproduces_the_pipeline(saved):
    """Same initial latents, prompt "a cat", guidance scale 3, 10 DDIM steps: the latents agree
    to 1e-4 and the images to 1e-4 (float32 networks)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(saved).to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    prior = load_stable_diffusion(saved)
    assert (prior.shape, prior.pixel_shape) == ((4, 8, 8), (3, 16, 16))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    theirs = pipe(
        prompt=["a cat", "a dog"], num_inference_steps=10, guidance_scale=3.0,
        latents=latents, output_type="latent",
    ).images  # fmt: skip
    scheduler = DDIMScheduler.from_pretrained(saved / "scheduler")
    scheduler.set_timesteps(10)
    ts = diffusers_times(scheduler)
    assert ts.numel() == 11 and float(ts[-1]) == 1 / 1000  # set_alpha_to_one is false
    guided_prior = guided.ClassifierFree(prior, 3.0, key="prompt_embeds", null=prior.null)
    embeds = prior.prompts.encode(["a cat", "a dog"])
    cost = priors.Cost()
    ours = guided.DDIM()(guided_prior, latents.double(), ts, prompt_embeds=embeds, cost=cost)
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-4, atol=1e-4)
    assert cost.nfe == 20  # two passes per step, batched
    images = pipe(
        prompt=["a cat", "a dog"], num_inference_steps=10, guidance_scale=3.0,
        latents=latents, output_type="pt",
    ).images  # fmt: skip
    decoded = ((prior.decode(ours) + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(decoded.float(), images, rtol=1e-4, atol=1e-4)


def test_pag_with_cfg_reproduces_the_pag_pipeline(saved):
    """diffusers' StableDiffusionPAGPipeline on the same folder (its default layers, "mid"),
    guidance scale 3, PAG scale 2, 10 DDIM steps: guided.PAG with cfg_scale (its three-pass
    form, on the prior's default middle layers) agrees to 1e-4 (measured 7.6e-6), at 3 NFE per
    step; without the PAG term the latents differ by 0.46."""
    from diffusers import DDIMScheduler, StableDiffusionPAGPipeline

    pipe = StableDiffusionPAGPipeline.from_pretrained(saved, pag_applied_layers=["mid"])
    pipe.set_progress_bar_config(disable=True)
    prior = load_stable_diffusion(saved)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    prompts = ["a cat", "a dog"]
    theirs = pipe(
        prompt=prompts, num_inference_steps=10, guidance_scale=3.0, pag_scale=2.0,
        latents=latents, output_type="latent",
    ).images  # fmt: skip
    scheduler = DDIMScheduler.from_pretrained(saved / "scheduler")
    scheduler.set_timesteps(10)
    ts = diffusers_times(scheduler)
    pag = guided.PAG(prior, 2.0, cfg_scale=3.0, key="prompt_embeds", null=prior.null)
    assert all(name.startswith("mid.") for name in pag.layers)
    embeds = prior.prompts.encode(prompts)
    cost = priors.Cost()
    ours = guided.DDIM()(pag, latents.double(), ts, prompt_embeds=embeds, cost=cost)
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-4, atol=1e-4)
    assert cost.nfe == 30
    cfg = guided.ClassifierFree(prior, 3.0, key="prompt_embeds", null=prior.null)
    plain = guided.DDIM()(cfg, latents.double(), ts, prompt_embeds=embeds)
    assert float((plain.float() - theirs).abs().max()) > 0.1


def test_latent_dps_restores_through_the_pipeline(saved):
    """Box inpainting (sigma_y 0.05) of an image of the pipeline's own prior, 20 steps: latent
    DPS (zeta 100) with the prompt's guidance ends about twice as close to the measurement as
    the unguided run from the same noise (RMS residuals measured 0.22 and 0.25 against 0.46
    and 0.51; this random network's decoder cannot fit the box much better)."""
    prior = load_stable_diffusion(saved)
    guided_prior = guided.ClassifierFree(prior, 2.0, key="prompt_embeds", null=prior.null)
    embeds = prior.prompts.encode("a cat")
    g = torch.Generator().manual_seed(2)
    ts = guided.time_grid(20)
    start = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    truth = prior.decode(guided.DDIM()(guided_prior, start, ts, prompt_embeds=embeds))
    op = operators.Inpainting(operators.box_mask(16, 16, 4, 4, 8, 8), (3, 16, 16))
    y = op(truth + 0.05 * torch.randn(truth.shape, generator=g, dtype=torch.float64))
    z_T = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    cost = priors.Cost()
    method = guided.LatentDPS(op, y, 0.05, 100.0)
    z = method(
        guided_prior, z_T, ts, prompt_embeds=embeds, generator=torch.Generator().manual_seed(3),
        cost=cost,
    )  # fmt: skip
    free = guided.DDPM()(
        guided_prior, z_T, ts, prompt_embeds=embeds, generator=torch.Generator().manual_seed(3)
    )
    rms = (op(prior.decode(z)) - y).pow(2).mean((1, 2, 3)).sqrt()
    unguided = (op(prior.decode(free)) - y).pow(2).mean((1, 2, 3)).sqrt()
    assert float(rms.max()) * 1.5 < float(unguided.min())
    assert (cost.nfe, cost.vjp, cost.decoder, cost.decoder_vjp) == (40, 20, 20, 20)


def test_missing_parts_and_wrong_conditions_are_named(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no \['vae'\] folder"):
        (tmp_path / "broken").mkdir()
        for part in ("unet", "text_encoder", "tokenizer", "scheduler"):
            (tmp_path / "broken" / part).mkdir()
        load_stable_diffusion(tmp_path / "broken")
    prior = load_stable_diffusion(saved)
    z = torch.zeros(1, 4, 8, 8, dtype=torch.float64)
    with pytest.raises(TypeError, match="needs the condition prompt_embeds"):
        prior(z, torch.tensor(0.5))
    with pytest.raises(TypeError, match=r"takes no condition \['label'\]"):
        prior(z, torch.tensor(0.5), label=torch.tensor([1]))
    with pytest.raises(TypeError, match="strings"):
        prior.prompts.encode([1, 2])


@pytest.fixture(scope="module")
def saved_3(tmp_path_factory):
    """A tiny StableDiffusion3Pipeline without T5 (latents 4 x 8 x 8, images 3 x 16 x 16, time
    shift 3) saved to disk."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    root = tmp_path_factory.mktemp("sd3")
    tokenizer = _tokenizer(root / "vocabulary")
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, out_channels=4, num_layers=1,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=64,
        caption_projection_dim=16, pooled_projection_dim=64, pos_embed_max_size=16,
    )  # fmt: skip
    vae = _vae(
        scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False
    )  # SD3's scaling and shift

    def clip():
        return CLIPTextModelWithProjection(_clip_config(tokenizer, 32))

    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clip(), tokenizer=tokenizer, text_encoder_2=clip(), tokenizer_2=tokenizer,
        text_encoder_3=None, tokenizer_3=None,
    )  # fmt: skip
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


def test_flow_euler_with_prompt_guidance_reproduces_the_sd3_pipeline(saved_3):
    """Same initial latents, two prompts, guidance scale 4, 8 steps on the shifted flow grid:
    our DDIM (Euler on the velocity) with classifier-free guidance on both embeddings agrees
    with the pipeline's latents and images to 1e-4 (float32 networks)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from priors.stable_diffusion import load_stable_diffusion_3

    none = ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor")
    pipe = StableDiffusion3Pipeline.from_pretrained(saved_3, **dict.fromkeys(none))
    pipe.set_progress_bar_config(disable=True)
    prior = load_stable_diffusion_3(saved_3)
    assert isinstance(prior.schedule, priors.RectifiedSchedule)
    assert (prior.shape, prior.pixel_shape) == ((4, 8, 8), (3, 16, 16))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    prompts = ["a cat", "a dog"]
    kwargs = {"num_inference_steps": 8, "guidance_scale": 4.0, "latents": latents}
    theirs = pipe(prompt=prompts, output_type="latent", **kwargs).images
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(saved_3 / "scheduler")
    scheduler.set_timesteps(8)
    ts = diffusers_times(scheduler)
    assert float(ts[0]) == 1 and float(ts[-1]) == 0 and ts.numel() == 9
    cfg = guided.ComposableFree(prior, [prior.prompts.encode(prompts)], [4.0], null=prior.null)
    cost = priors.Cost()
    ours = guided.DDIM()(cfg, latents.double(), ts, cost=cost)
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-4, atol=1e-4)
    assert cost.nfe == 16
    images = pipe(prompt=prompts, output_type="pt", **kwargs).images
    decoded = ((prior.decode(ours) + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(decoded.float(), images, rtol=1e-4, atol=1e-4)


def test_latent_dps_restores_through_the_sd3_pipeline(saved_3):
    """Box inpainting (sigma_y 0.05) of an image of the pipeline's own prior, 20 steps on the
    shifted grid from pure noise: latent DPS (zeta 100) ends about 3x closer to the
    measurement than the unguided run from the same noise (RMS residuals measured 0.095 and
    0.098 against 0.31 and 0.28)."""
    from priors.stable_diffusion import load_stable_diffusion_3

    prior = load_stable_diffusion_3(saved_3)
    cfg = guided.ComposableFree(prior, [prior.prompts.encode("a cat")], [2.0], null=prior.null)
    g = torch.Generator().manual_seed(2)
    ts = guided.time_grid(20, "shifted", shift=3.0)
    start = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    truth = prior.decode(guided.DDIM()(cfg, start, ts))
    op = operators.Inpainting(operators.box_mask(16, 16, 4, 4, 8, 8), (3, 16, 16))
    y = op(truth + 0.05 * torch.randn(truth.shape, generator=g, dtype=torch.float64))
    z_T = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    cost = priors.Cost()
    method = guided.LatentDPS(op, y, 0.05, 100.0)
    z = method(cfg, z_T, ts, generator=torch.Generator().manual_seed(3), cost=cost)
    free = guided.DDPM()(cfg, z_T, ts, generator=torch.Generator().manual_seed(3))
    rms = (op(prior.decode(z)) - y).pow(2).mean((1, 2, 3)).sqrt()
    unguided = (op(prior.decode(free)) - y).pow(2).mean((1, 2, 3)).sqrt()
    assert float(rms.max()) * 1.5 < float(unguided.min())
    # no network VJP at t = 1, where the guided denoiser returns the prior's estimate
    assert (cost.nfe, cost.vjp, cost.decoder, cost.decoder_vjp) == (40, 19, 19, 19)


def test_a_sd3_folder_missing_a_part_is_named(tmp_path):
    from priors.stable_diffusion import load_stable_diffusion_3

    for part in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        (tmp_path / part).mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \['text_encoder_2', 'tokenizer_2'\]"):
        load_stable_diffusion_3(tmp_path)
