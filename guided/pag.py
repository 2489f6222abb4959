r"""Perturbed-attention guidance (PAG).

PAG guides a prior away from a version of itself whose structure is degraded: a second
pass with chosen self-attention layers' attention matrices replaced by the identity
(:func:`priors.identity_attention`: each pixel attends only to itself), and

.. math:: \tilde\epsilon = \hat\epsilon + s\,(\hat\epsilon - \hat\epsilon_{\text{perturbed}}),

(Ahn et al., eq. 9), applied here to the denoised prediction, :math:`\tilde x = \hat x +
s\,(\hat x - \hat x_{\text{perturbed}})`, which is the same update: at a fixed
:math:`x_t`, :math:`\hat x` is an affine function of :math:`\hat\epsilon`. Two network
evaluations per row; :math:`s = 0` is the prior. The conditions (a class label, a prompt)
pass to both passes, so on a conditional prior PAG sharpens the conditional prediction
without an unconditional pass.

**With classifier-free guidance.** Wrapping a :class:`~guided.ClassifierFree` denoiser,
both of its passes are perturbed and the update acts on the guided prediction (four
evaluations per row). diffusers' PAG pipelines instead perturb only the conditional pass and
add :math:`s(\hat\epsilon_c - \hat\epsilon_{c,\text{perturbed}})` to the guided noise (three
evaluations); that form is not built here. diffusers' optional time-adaptive scale
(``pag_adaptive_scale``, off by default there) is not built either.

Layers: names from :func:`priors.attention_layers` (self-attention only); by default every
self-attention layer of the middle block, the layers diffusers' PAG guide applies it to
(``pag_applied_layers=["mid"]``).

References:
    | Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance
    | (Ahn, Cho, Min, Jang, Kim, Kim, Park, Jin & Kim, ECCV 2024)
    | https://arxiv.org/abs/2403.17377
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

import checks

from priors import Denoiser, Wrapper
from priors.attention import identity_attention, self_attention

__all__ = ["PAG"]


class PAG(Wrapper):
    r"""Perturbed-attention guidance of a prior with self-attention layers (see the module).

    Arguments:
        prior: A denoiser whose network has self-attention layers.
        scale: :math:`s \ge 0`.
        layers: The self-attention layers to perturb; default: the middle block's.
    """

    def __init__(self, prior: Denoiser, scale: float, layers: Sequence[str] | None = None) -> None:
        if not isinstance(prior, Denoiser):
            raise TypeError(f"prior must be a priors.Denoiser, got {type(prior).__name__}")
        selfs = self_attention(prior)
        if not selfs:
            raise ValueError(
                "perturbed-attention guidance needs a prior with self-attention layers; "
                f"{type(prior).__name__} has none"
            )
        if layers is None:
            layers = [name for name in selfs if name.startswith("mid.")]
            if not layers:
                raise ValueError(
                    f"the prior has no middle self-attention; pick layers= in {selfs}"
                )
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise TypeError(f"layers must be a list of layer names, got {layers!r}")
        unknown = [name for name in layers if name not in selfs]
        if not layers or unknown:
            raise ValueError(f"layers must name self-attention layers in {selfs}, got {layers}")
        super().__init__(prior)
        self.scale = checks.number(scale, "scale", low=0)
        self.layers = list(layers)

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        x_hat = self.prior(x_t, t, **cond)
        if self.scale == 0:
            return x_hat
        with identity_attention(self.prior, self.layers):
            perturbed = self.prior(x_t, t, **cond)
        return x_hat + self.scale * (x_hat - perturbed)
