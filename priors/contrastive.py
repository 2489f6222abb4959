r"""A learned surrogate likelihood: contrastive encoders of signals and measurements.

Two encoders map a signal :math:`x` and a measurement :math:`y` to unit vectors
:math:`f(x), g(y) \in \mathbb{R}^F`; the critic is their scaled inner product

.. math:: s_\theta(x, y) = \langle f(x), g(y) \rangle / \tau .

Trained on pairs :math:`(x_i, y_i = A(x_i))` simulated with the operator (a black box is
fine: only its outputs are used) by the symmetric InfoNCE loss over a batch of :math:`B`
pairs (Oord et al., 2018; the CLIP form of Radford et al., 2021),

.. math:: \mathcal{L} = -\frac{1}{2B} \sum_i \Big[ \log \frac{e^{s(x_i, y_i)}}{\sum_j
    e^{s(x_j, y_i)}} + \log \frac{e^{s(x_i, y_i)}}{\sum_j e^{s(x_i, y_j)}} \Big],

whose minimiser is the pointwise mutual information up to a constant,
:math:`s^\star(x, y) = \log p(y \mid x) - \log p(y) + c` (each one-sided term alone is
minimised by it plus a function of :math:`y`, resp. :math:`x`; the sum needs both). Hence
:math:`\nabla_x s_\theta(x, y) \approx \nabla_x \log p(y \mid x)`: the critic's gradient is
a likelihood score that never differentiates the operator, which is how CoGuide guides a
diffusion prior through an operator without derivatives (a path planner there;
:class:`guided.SurrogateLikelihood`). The estimate is only as good as the encoders: it
saturates at :math:`\log B` nats of discrimination and knows nothing outside the simulated
distribution of :math:`x`.

References:
    | Representation Learning with Contrastive Predictive Coding (Oord et al., 2018)
    | https://arxiv.org/abs/1807.03748
    | On Variational Bounds of Mutual Information (Poole et al., 2019)
    | https://arxiv.org/abs/1905.06922
    | Contrastive Diffusion Guidance (CoGuide, ICLR 2026), guidance by
    | :math:`\nabla_{x_t} \langle f(\hat x(x_t)), g(y) \rangle`
"""

from __future__ import annotations

import math

from collections.abc import Sequence

import torch

from torch import Tensor, nn

import checks

__all__ = ["ContrastiveLikelihood", "Encoder"]


class Encoder(nn.Module):
    r"""Unit-norm features :math:`(B, F)` of inputs :math:`(B, *shape)`: a strided CNN for
    images :math:`(C, H, W)`, an MLP for vectors :math:`(D,)`.

    Arguments:
        shape: One input's shape.
        features: :math:`F`.
        width: Channels of the first convolution (the MLP's hidden width is ``8 * width``).
    """

    def __init__(self, shape: Sequence[int], features: int = 64, width: int = 32) -> None:
        super().__init__()
        self.shape = tuple(checks.integer(s, "shape", low=1) for s in shape)
        features = checks.integer(features, "features", low=1)
        width = checks.integer(width, "width", low=1)
        if any(s < 1 for s in self.shape) or len(self.shape) not in (1, 3):
            raise ValueError(f"Encoder takes shapes (C, H, W) or (D,), got {self.shape}")
        if len(self.shape) == 3:
            c, h, w = self.shape
            cells = math.ceil(h / 4) * math.ceil(w / 4)
            self.net = nn.Sequential(
                nn.Conv2d(c, width, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                nn.SiLU(),
                nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
                nn.SiLU(),
                nn.Flatten(),
                nn.Linear(2 * width * cells, 8 * width),
                nn.SiLU(),
                nn.Linear(8 * width, features),
            )
        else:
            self.net = nn.Sequential(
                nn.Linear(self.shape[0], 8 * width),
                nn.SiLU(),
                nn.Linear(8 * width, 8 * width),
                nn.SiLU(),
                nn.Linear(8 * width, features),
            )

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"the encoder takes inputs (B, *{self.shape}), got {tuple(x.shape)}")
        dtype = next(self.parameters()).dtype
        return nn.functional.normalize(self.net(x.to(dtype)), dim=-1)


class ContrastiveLikelihood(nn.Module):
    r"""The critic :math:`s_\theta(x, y) = \langle f(x), g(y) \rangle / \tau` (see the
    module), an estimate of :math:`\log p(y \mid x)` up to a function of :math:`y`.

    Arguments:
        x_shape: One signal's shape.
        y_shape: One measurement's shape.
        features: The embedding size :math:`F`.
        width: The encoders' width.
        temperature: The initial :math:`\tau` (learned, kept in [0.01, 1]).
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        y_shape: Sequence[int],
        features: int = 64,
        width: int = 32,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        temperature = checks.number(temperature, "temperature", low=0.01, high=1)
        self.x_encoder = Encoder(x_shape, features, width)
        self.y_encoder = Encoder(y_shape, features, width)
        self.x_shape, self.y_shape = self.x_encoder.shape, self.y_encoder.shape
        #: What rebuilds the module (:func:`priors.weights.save` writes it with the weights).
        self.arguments = {
            "x_shape": list(self.x_shape), "y_shape": list(self.y_shape),
            "features": int(features), "width": int(width), "temperature": temperature,
        }  # fmt: skip
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def temperature(self) -> Tensor:
        r""":math:`\tau`, clamped to [0.01, 1]."""
        return self.log_temperature.exp().clamp(0.01, 1.0)

    def embed_x(self, x: Tensor) -> Tensor:
        """:math:`f(x)`, :math:`(B, F)`."""
        return self.x_encoder(x)

    def embed_y(self, y: Tensor) -> Tensor:
        """:math:`g(y)`, :math:`(B, F)`."""
        return self.y_encoder(y)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        r""":math:`s_\theta(x_i, y_i)` per row, :math:`(B,)`."""
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have as many rows, got {x.shape[0]} and {y.shape[0]}")
        return (self.embed_x(x) * self.embed_y(y)).sum(-1) / self.temperature

    def logits(self, x: Tensor, y: Tensor) -> Tensor:
        r""":math:`s_\theta(x_i, y_j)` for every pair, :math:`(B, B)`."""
        return self.embed_x(x) @ self.embed_y(y).T / self.temperature

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The symmetric InfoNCE loss of a batch of matching pairs (row ``i`` of ``x`` with
        row ``i`` of ``y``; every other row is a negative)."""
        if x.shape[0] != y.shape[0] or x.shape[0] < 2:
            raise ValueError(
                f"InfoNCE needs at least 2 matching pairs, got {x.shape[0]} and {y.shape[0]}"
            )
        logits = self.logits(x, y)
        target = torch.arange(x.shape[0], device=logits.device)
        ce = nn.functional.cross_entropy
        return 0.5 * (ce(logits, target) + ce(logits.T, target))
