"""Diffusion priors: noise schedules, denoisers and analytic priors.

A prior is a :class:`Denoiser` returning :math:`E[x \\mid x_t]` under its
:class:`Schedule`. ``priors`` never imports ``operators`` or ``guided``.
"""

from priors.cost import Cost, measure, record
from priors.denoiser import Denoiser
from priors.gmm import GaussianMixture
from priors.random import GeneratorLike, randn
from priors.schedules import (
    CosineSchedule,
    DiscreteSchedule,
    EDMSchedule,
    LinearSchedule,
    Schedule,
    as_time,
)

__all__ = [
    "CosineSchedule",
    "Cost",
    "Denoiser",
    "DiscreteSchedule",
    "EDMSchedule",
    "GaussianMixture",
    "GeneratorLike",
    "LinearSchedule",
    "Schedule",
    "as_time",
    "measure",
    "randn",
    "record",
]
