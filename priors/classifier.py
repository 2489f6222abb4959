r"""Image classifiers: noise-conditional ones for classifier guidance, clean ones for
evaluation.

A :class:`Classifier` is the encoder half of a :class:`~priors.unet.UNet` (down path and
middle block), global average pooling and a linear head. With a schedule it is
noise-conditional, :math:`p_\phi(c \mid x_t, t)`, trained on :math:`x_t = \alpha_t x +
\sigma_t \epsilon` over all :math:`t` (Dhariwal & Nichol, 2021); without one it classifies
clean images and its pooled features serve as the feature space of Fréchet distances.

References:
    | Diffusion Models Beat GANs on Image Synthesis (Dhariwal & Nichol, 2021), Section 4
    | https://arxiv.org/abs/2105.05233
"""

from __future__ import annotations

import torch

from torch import Tensor, nn

from priors.schedules import Schedule, as_time
from priors.unet import UNet

__all__ = ["Classifier"]


class Classifier(nn.Module):
    r"""Logits :math:`(B, K)` of images :math:`(B, C, H, W)`.

    Arguments:
        encoder: An ``encoder_only`` U-Net without classes.
        num_classes: :math:`K`.
        schedule: The noise schedule for a noise-conditional classifier; ``None`` for a
            clean one.
    """

    def __init__(self, encoder: UNet, num_classes: int, schedule: Schedule | None = None) -> None:
        super().__init__()
        if not encoder.encoder_only or encoder.num_classes:
            raise ValueError("the encoder must be an encoder_only UNet without classes")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.encoder = encoder
        self.num_classes = num_classes
        self.schedule = schedule
        self.norm = nn.GroupNorm(8 if encoder.out_features % 8 == 0 else 1, encoder.out_features)
        self.head = nn.Linear(encoder.out_features, num_classes)

    @property
    def noisy(self) -> bool:
        """Whether the classifier is noise-conditional."""
        return self.schedule is not None

    def features(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        r"""Pooled features :math:`(B, F)` (``t`` is required iff the classifier is noisy)."""
        if self.noisy and t is None:
            raise ValueError("a noise-conditional classifier needs the time t")
        if not self.noisy and t is not None:
            raise ValueError("a clean classifier takes no time t")
        t = torch.zeros(()) if t is None else as_time(t)
        t = t.to(x.device).expand(x.shape[0])
        dtype = self.head.weight.dtype
        h = self.encoder.encode(x.to(dtype), t)[0]
        return nn.functional.silu(self.norm(h)).mean(dim=(-2, -1))

    def forward(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        """Logits :math:`(B, K)`."""
        return self.head(self.features(x, t))
