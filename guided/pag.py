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

**With classifier-free guidance**, two forms:

- ``cfg_scale`` :math:`w` (diffusers' PAG pipelines, ``pag_utils.py``): the unconditional,
  conditional and perturbed conditional passes,

  .. math:: \tilde x = \hat x_\varnothing + w\,(\hat x_c - \hat x_\varnothing)
      + s\,(\hat x_c - \hat x_{c,\text{perturbed}}),

  three evaluations per row (the first two batched in one call, as
  :class:`~guided.ClassifierFree` makes them; the perturbed one alone, since the perturbation
  applies to a whole call; at :math:`w = 1` the unconditional pass is skipped). With the same
  DDIM steps it reproduces ``StableDiffusionPAGPipeline`` (tested on a tiny saved pipeline).
- Wrapping a :class:`~guided.ClassifierFree` denoiser instead perturbs both of its passes and
  guides the guided prediction (four evaluations per row).

diffusers' optional time-adaptive scale (``pag_adaptive_scale``, off by default there,
written in their integer timesteps) is not built.

Layers: names from :func:`priors.attention_layers` (self-attention only); by default every
self-attention layer of the middle block, the layers diffusers' PAG guide applies it to
(``pag_applied_layers=["mid"]``).

References:
    | Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance
    | (Ahn, Cho, Min, Jang, Kim, Kim, Park, Jin & Kim, ECCV 2024)
    | https://arxiv.org/abs/2403.17377
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

import checks

from guided.cfg import _null, both_passes, requested
from priors import Denoiser, Wrapper
from priors.attention import identity_attention, self_attention

__all__ = ["PAG"]


class PAG(Wrapper):
    r"""Perturbed-attention guidance of a prior with self-attention layers (see the module).

    Arguments:
        prior: A denoiser whose network has self-attention layers.
        scale: :math:`s \ge 0`.
        layers: The self-attention layers to perturb; default: the middle block's.
        cfg_scale: :math:`w`, classifier-free guidance in diffusers' three-pass form (None:
            none; the conditions then reach both passes unchanged).
        key: The condition keyword that ``cfg_scale`` drops (``label`` for our priors).
        null: Its dropped value (default: label :math:`-1`).
    """

    def __init__(
        self,
        prior: Denoiser,
        scale: float,
        layers: Sequence[str] | None = None,
        *,
        cfg_scale: float | None = None,
        key: str = "label",
        null: Mapping[str, Any] | None = None,
    ) -> None:
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
        if cfg_scale is not None:
            cfg_scale = checks.number(cfg_scale, "cfg_scale")
            if key == "label" and not getattr(prior, "num_classes", 0):
                raise ValueError(
                    "classifier-free guidance on labels needs a class-conditional prior"
                )
        super().__init__(prior)
        self.scale = checks.number(scale, "scale", low=0)
        self.layers = list(layers)
        self.cfg_scale, self.key = cfg_scale, key
        self.null = None if cfg_scale is None else _null(null, [key])[key]

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        if self.cfg_scale is None:
            x_hat = guided = self.prior(x_t, t, **cond)
        else:
            c, rest = requested(cond, self.key, x_t.shape[0], x_t.device)
            if self.cfg_scale == 1:  # the plain conditional prediction
                x_hat = guided = self.prior(x_t, t, **{self.key: c}, **rest)
            else:
                x_hat, unconditional = both_passes(
                    self.prior, x_t, t, self.key, c, self.null, rest
                )
                guided = unconditional + self.cfg_scale * (x_hat - unconditional)
        if self.scale == 0:
            return guided
        with identity_attention(self.prior, self.layers):
            perturbed = self.prior(x_t, t, **cond)
        return guided + self.scale * (x_hat - perturbed)
