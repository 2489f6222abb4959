"""Diffusion priors: noise schedules, denoisers and analytic priors.

A prior is a :class:`Denoiser` returning :math:`E[x \\mid x_t]` under its
:class:`Schedule`. ``priors`` never imports ``operators`` or ``guided``.
"""

from checks import all_finite
from priors.accelerate import Accelerated
from priors.attention import (
    attention_layers,
    identity_attention,
    record_attention,
    self_attention,
)
from priors.autoencoder import Autoencoder
from priors.classifier import Classifier
from priors.colour import LumaChroma, PerChannel
from priors.conditions import fixed_conditions
from priors.contrastive import ContrastiveLikelihood, Encoder
from priors.conv_autoencoder import ConvAutoencoder
from priors.cost import Cost, measure, record
from priors.critic import Critic
from priors.denoiser import Denoiser, Wrapper
from priors.denoising import denoise, noise_time
from priors.flow import FlowDenoiser
from priors.gaussian_policy import GaussianPolicy
from priors.gmm import GaussianMixture
from priors.latent import LatentPrior, latent_of
from priors.mlp import MLP, MLPDenoiser
from priors.network import UNetDenoiser
from priors.noising import Noised, diffuse
from priors.random import GeneratorLike, randn, randn_blocks, run_generator, sampling_generator
from priors.schedules import (
    CosineSchedule,
    DiscreteSchedule,
    EDMSchedule,
    LinearSchedule,
    RectifiedSchedule,
    Schedule,
    as_time,
)
from priors.sources import from_path
from priors.tiling import Tiled
from priors.unet import UNet
from priors.weights import available, load, load_classifier

__all__ = [
    "MLP",
    "Accelerated",
    "Autoencoder",
    "Classifier",
    "ContrastiveLikelihood",
    "ConvAutoencoder",
    "CosineSchedule",
    "Cost",
    "Critic",
    "Denoiser",
    "DiscreteSchedule",
    "EDMSchedule",
    "Encoder",
    "FlowDenoiser",
    "GaussianMixture",
    "GaussianPolicy",
    "GeneratorLike",
    "LatentPrior",
    "LinearSchedule",
    "LumaChroma",
    "MLPDenoiser",
    "Noised",
    "PerChannel",
    "RectifiedSchedule",
    "Schedule",
    "Tiled",
    "UNet",
    "UNetDenoiser",
    "Wrapper",
    "all_finite",
    "as_time",
    "attention_layers",
    "available",
    "denoise",
    "diffuse",
    "fixed_conditions",
    "from_path",
    "identity_attention",
    "latent_of",
    "load",
    "load_classifier",
    "measure",
    "noise_time",
    "randn",
    "randn_blocks",
    "record",
    "record_attention",
    "run_generator",
    "sampling_generator",
    "self_attention",
]
