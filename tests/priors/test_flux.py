"""A saved Flux pipeline as a latent flow prior: a tiny random FluxPipeline (transformer with
distilled guidance, VAE, CLIP and T5 text encoders, a CLIP tokenizer and a T5 unigram tokenizer
that the test writes) is saved with ``save_pretrained`` and loaded back; our Euler steps on its
shifted grid reproduce the pipeline's latents and images, with the distilled guidance input
and with its "true CFG"; latent DPS restores through it; errors name what is wrong. Nothing is
downloaded."""

import json
import math
import shutil
import string

import pytest
import torch

import guided
import operators
import priors

from priors.flux import load_flux, pack, unpack
from priors.stable_diffusion import diffusers_times
from tests.priors.test_stable_diffusion import _clip_config, _tokenizer, _vae


def _t5_tokenizer():
    """A T5 tokenizer on a unigram vocabulary of letters and three words (no sentencepiece
    file: the fast tokenizer's model is built here)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase]
    pieces += [("\u2581" + word, -1.0) for word in ("a", "cat", "dog")]
    model = Tokenizer(models.Unigram(pieces, unk_id=2))
    model.pre_tokenizer = pre_tokenizers.Metaspace()
    model.decoder = decoders.Metaspace()
    model.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=model, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        extra_ids=0, model_max_length=32,
    )  # fmt: skip


@pytest.fixture(scope="module")
def saved_flux(tmp_path_factory):
    """A tiny FluxPipeline (latents 4 x 8 x 8, images 3 x 16 x 16, 16 latent tokens of 16
    values, FLUX.1's dynamic shift settings) saved to disk."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("flux")
    tokenizer = _tokenizer(root / "vocabulary")
    tokenizer_2 = _t5_tokenizer()
    torch.manual_seed(0)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=2,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    )  # fmt: skip
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        guidance_embeds=True, axes_dims_rope=[4, 4, 8],
    )  # fmt: skip
    vae = _vae(
        scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False
    )  # FLUX.1's scaling and shift
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
        shift=3.0, use_dynamic_shifting=True,
    )  # fmt: skip
    pipe = FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=CLIPTextModel(_clip_config(tokenizer, 32)),
        tokenizer=tokenizer, text_encoder_2=t5, tokenizer_2=tokenizer_2, transformer=transformer,
    )  # fmt: skip
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


def _pipeline(saved):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(saved)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_packing_is_the_pipelines():
    from diffusers import FluxPipeline

    z = torch.randn(2, 4, 6, 8, generator=torch.Generator().manual_seed(0))
    tokens = FluxPipeline._pack_latents(z, 2, 4, 6, 8)
    torch.testing.assert_close(pack(z), tokens, rtol=0, atol=0)
    torch.testing.assert_close(unpack(tokens, 6, 8), z, rtol=0, atol=0)
    # the pipeline unpacks from the image size and the VAE's down-sampling (here 2)
    torch.testing.assert_close(FluxPipeline._unpack_latents(tokens, 12, 16, 2), z, rtol=0, atol=0)


def test_flux_euler_reproduces_the_pipeline(saved_flux):
    """Same initial latents, two prompts, 6 steps on the resolution-shifted grid: our DDIM
    (Euler on the velocity) agrees with the pipeline's latents and images to 1e-4 (float32
    networks) with its distilled guidance (one pass per step) and with its true CFG on the
    empty negative prompt (two); the grid time_grid(6, "shifted", shift=prior.shift) is the
    scheduler's."""
    pipe = _pipeline(saved_flux)
    prior = load_flux(saved_flux, 16, max_sequence_length=16)
    assert isinstance(prior.schedule, priors.RectifiedSchedule)
    assert (prior.shape, prior.pixel_shape) == ((4, 8, 8), (3, 16, 16))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    prompts = ["a cat", "a dog"]
    kwargs = {"num_inference_steps": 6, "height": 16, "width": 16, "max_sequence_length": 16}
    kwargs |= {"latents": pack(latents), "guidance_scale": 3.5}
    theirs = unpack(pipe(prompt=prompts, output_type="latent", **kwargs).images, 8, 8)
    ts = guided.time_grid(6, "shifted", shift=prior.shift)
    torch.testing.assert_close(ts, diffusers_times(pipe.scheduler), rtol=0, atol=1e-6)
    # 16 tokens: mu = 0.5 + (1.15 - 0.5) (16 - 256) / (4096 - 256), a shift of e^mu = 1.583
    assert prior.shift == pytest.approx(math.exp(0.5 + 0.65 * (16 - 256) / 3840), rel=1e-12)
    conditions = prior.prompts.encode(prompts)
    cost = priors.Cost()
    ours = guided.DDIM()(prior, latents.double(), ts, cost=cost, **conditions)
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-4, atol=1e-4)
    assert cost.nfe == 6
    images = pipe(prompt=prompts, output_type="pt", **kwargs).images
    decoded = ((prior.decode(ours) + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(decoded.float(), images, rtol=1e-4, atol=1e-4)
    # the distilled guidance is an input: another scale moves the output, 3.5 is the default
    scales = torch.tensor([3.5, 1.0])
    other = guided.DDIM()(prior, latents.double(), ts, guidance=scales, **conditions)
    torch.testing.assert_close(other[0], ours[0], rtol=0, atol=0)
    assert float((other[1] - ours[1]).abs().max()) > 1e-3
    # true CFG on the empty negative prompt, through our classifier-free wrapper
    true_cfg = pipe(prompt=prompts, output_type="latent", true_cfg_scale=2.0,
                    negative_prompt=["", ""], **kwargs).images  # fmt: skip
    cfg = guided.ComposableFree(prior, [conditions], [2.0], null=prior.null)
    cost = priors.Cost()
    ours = guided.DDIM()(cfg, latents.double(), ts, cost=cost)
    torch.testing.assert_close(ours.float(), unpack(true_cfg, 8, 8), rtol=1e-4, atol=1e-4)
    assert cost.nfe == 12


def test_latent_dps_restores_through_flux(saved_flux):
    """Box inpainting (sigma_y 0.05) of an image of the pipeline's own prior, 20 steps on its
    shifted grid from pure noise: latent DPS (zeta 100) ends about 3x closer to the measurement
    than the unguided run from the same noise (RMS residuals measured 0.113 and 0.100 against
    0.368 and 0.395; asserted: 1.5x)."""
    prior = load_flux(saved_flux, 16, max_sequence_length=16)
    conditions = prior.prompts.encode("a cat")
    g = torch.Generator().manual_seed(2)
    ts = guided.time_grid(20, "shifted", shift=prior.shift)
    start = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    truth = prior.decode(guided.DDIM()(prior, start, ts, **conditions))
    op = operators.Inpainting(operators.box_mask(16, 16, 4, 4, 8, 8), (3, 16, 16))
    y = op(truth + 0.05 * torch.randn(truth.shape, generator=g, dtype=torch.float64))
    z_T = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    cost = priors.Cost()
    method = guided.LatentDPS(op, y, 0.05, 100.0)
    z = method(prior, z_T, ts, generator=torch.Generator().manual_seed(3), cost=cost, **conditions)
    free = guided.DDPM()(prior, z_T, ts, generator=torch.Generator().manual_seed(3), **conditions)
    rms = (op(prior.decode(z)) - y).pow(2).mean((1, 2, 3)).sqrt()
    unguided = (op(prior.decode(free)) - y).pow(2).mean((1, 2, 3)).sqrt()
    assert float(rms.max()) * 1.5 < float(unguided.min()), (rms, unguided)
    # no network VJP at t = 1, where the guided denoiser returns the prior's estimate
    assert (cost.nfe, cost.vjp, cost.decoder, cost.decoder_vjp) == (20, 19, 19, 19)


def test_flux_errors_name_what_is_wrong(saved_flux, tmp_path):
    for part in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        (tmp_path / part).mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \['text_encoder_2', 'tokenizer_2'\]"):
        load_flux(tmp_path)
    with pytest.raises(ValueError, match=r"multiple of 4 in each side"):
        load_flux(saved_flux, (16, 18))
    with pytest.raises(ValueError, match="max_sequence_length must be"):
        load_flux(saved_flux, 16, max_sequence_length=0)
    other = tmp_path / "karras"  # a scheduler whose grid is not a shifted uniform one
    shutil.copytree(saved_flux, other)
    config = other / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"use_karras_sigmas": True}))
    assert load_flux(other, 16, max_sequence_length=16).shift is None
    prior = load_flux(saved_flux, 16, max_sequence_length=16)
    z = torch.zeros(1, 4, 8, 8, dtype=torch.float64)
    with pytest.raises(TypeError, match="needs the conditions prompt_embeds and pooled"):
        prior(z, torch.tensor(0.5))
    conditions = prior.prompts.encode("a cat")
    for bad, error in ((float("nan"), ValueError), (torch.tensor([float("inf")]), ValueError),
                       (torch.tensor([3]), TypeError), ("3.5", TypeError)):  # fmt: skip
        with pytest.raises(error, match="guidance"):
            prior(z, torch.tensor(0.5), guidance=bad, **conditions)
    with pytest.raises(TypeError, match="strings"):
        prior.prompts.encode([1, 2])
