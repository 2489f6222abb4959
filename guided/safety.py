r"""Safety guidance: steer away from forbidden classes.

With a noise-conditional classifier and a set :math:`F` of forbidden classes, the term is the
score of being safe,

.. math:: g = s \, \nabla_{x_t} \log p_\phi(c \notin F \mid x_t, t)
    = s \, \nabla_{x_t} \Bigl[\operatorname{logsumexp}_{c \notin F} \ell_c
    - \operatorname{logsumexp}_{c} \ell_c\Bigr],

so the guided denoiser samples :math:`p_t(x_t)\, p_\phi(\text{safe} \mid x_t)^s`: the prior
restricted (softly, sharply for large :math:`s`) to the allowed classes. Unlike negative
classifier guidance :math:`-s \nabla \log p_\phi(F \mid x_t)`, whose push never stops, this
gradient vanishes once a sample is confidently safe, so allowed samples are left close to
the prior (Schramowski et al. steer by a safety concept in the same spirit; this is the
classifier form). It composes with classifier-free guidance (wrap the CFG denoiser) and
with measurement terms.

References:
    | Safe Latent Diffusion (Schramowski et al., 2023) https://arxiv.org/abs/2211.05105
    | Diffusion Models Beat GANs on Image Synthesis (Dhariwal & Nichol, 2021)
    | https://arxiv.org/abs/2105.05233
"""

from __future__ import annotations

import math

from typing import ClassVar

import torch

from torch import Tensor, nn

import checks

from guided.classifier import check_classes, check_classifier, log_prob_gradient
from guided.guidance import Guidance
from priors import Schedule

__all__ = ["SafetyGuidance"]


class SafetyGuidance(Guidance):
    r"""Guidance away from the classes ``forbidden``.

    Arguments:
        classifier: A noise-conditional classifier (``num_classes``, ``schedule``).
        forbidden: One class or a list of classes to avoid (at least one class must remain).
        scale: The scale :math:`s \ge 0`.
    """

    uses_vjp: ClassVar[bool] = False

    def __init__(
        self, classifier: nn.Module, forbidden: Tensor | int | list[int], scale: float = 1.0
    ) -> None:
        super().__init__()
        self.num_classes = check_classifier(classifier)
        self.classifier = classifier
        forbidden = check_classes(forbidden, self.num_classes, "forbidden").reshape(-1)
        allowed = torch.ones(self.num_classes, dtype=torch.bool)
        allowed[forbidden] = False
        if not bool(allowed.any()):
            raise ValueError("forbidden lists every class: nothing is left to sample")
        self.scale = checks.number(scale, "scale", low=0)
        self.register_buffer("allowed", allowed, persistent=False)

    def forward(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        allowed = self.allowed.to(x_t.device)

        def log_safe(logits: Tensor) -> Tensor:
            masked = logits.masked_fill(~allowed, -math.inf)
            return torch.logsumexp(masked, -1) - torch.logsumexp(logits, -1)

        return self.scale * log_prob_gradient(self.classifier, x_t, t, schedule, log_safe)
