r"""A trained network as a :class:`~priors.denoiser.Denoiser`.

:class:`UNetDenoiser` wraps a :class:`~priors.unet.UNet` trained to predict either

- ``prediction="v"``: the velocity :math:`v = \alpha_t \epsilon - \sigma_t x` (Salimans & Ho,
  2022), whose error is balanced across noise levels, turned into :math:`\hat x` by
  :func:`priors.tweedie.x0_from_v`; or
- ``prediction="flow"``: the flow-matching velocity :math:`u = \dot\alpha_t x +
  \dot\sigma_t \epsilon` (Lipman et al., 2023; :math:`\epsilon - x` on the
  :class:`~priors.RectifiedSchedule`), turned into :math:`\hat x` by
  :func:`priors.tweedie.x0_from_flow` (defined at pure noise, :math:`\alpha_t = 0`).

Class-conditional networks take ``label`` (long, shape :math:`(B,)`); ``label=None`` and
negative entries ask for the unconditional prediction the network learned through condition
dropout (Ho & Salimans, 2022), so one network serves classifier-free guidance.

References:
    | Progressive Distillation for Fast Sampling of Diffusion Models (Salimans & Ho, 2022)
    | https://arxiv.org/abs/2202.00512
    | Classifier-Free Diffusion Guidance (Ho & Salimans, 2022) https://arxiv.org/abs/2207.12598
    | Flow Matching for Generative Modeling (Lipman et al., 2023)
    | https://arxiv.org/abs/2210.02747
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torch import Tensor

from priors.denoiser import Denoiser
from priors.schedules import Schedule
from priors.tweedie import x0_from_flow, x0_from_v
from priors.unet import UNet

__all__ = ["PREDICTIONS", "UNetDenoiser", "check_label"]

#: What a :class:`UNetDenoiser`'s network may predict (see the module).
PREDICTIONS = ("v", "flow")


def check_label(label: Tensor | int | None, batch: int, num_classes: int) -> Tensor | None:
    r"""Validates class labels: ``None``, an int, or a long tensor :math:`(B,)` with entries
    in :math:`[0, \text{num\_classes})` or negative (unconditional rows)."""
    if label is None:
        return None
    if not num_classes:
        raise ValueError("this prior is unconditional: it takes no label")
    label = torch.as_tensor(label)
    if label.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        raise TypeError(f"label must hold integers, got {label.dtype}")
    if label.ndim == 0:
        label = label.expand(batch)
    if label.shape != (batch,):
        raise ValueError(f"label must have shape ({batch},), got {tuple(label.shape)}")
    if bool((label >= num_classes).any()):
        raise ValueError(f"labels must be < num_classes = {num_classes}, got {label.max()}")
    return label.long()


class UNetDenoiser(Denoiser):
    r"""A U-Net that predicts the velocity (v or flow-matching) as a denoiser.

    Arguments:
        network: The U-Net (input and output channels equal to the data's).
        schedule: The schedule it was trained with (for ``prediction="flow"``, one with
            :meth:`~priors.Schedule.derivatives`, usually the rectified one).
        shape: One sample's shape :math:`(C, H, W)`, or :math:`(C, T)` for a one-dimensional
            network (``dims=1``); for fully convolutional networks any :math:`H, W` (or
            :math:`T`) divisible by the network's factor also work.
        prediction: ``"v"`` or ``"flow"`` (see the module): what the network was trained to
            predict.
    """

    def __init__(
        self, network: UNet, schedule: Schedule, shape: Sequence[int], prediction: str = "v"
    ) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        super().__init__(schedule)
        self.network = network
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) != network.dims + 1:
            raise ValueError(
                f"shape {self.shape} must have {network.dims + 1} sizes (channels and the "
                f"network's {network.dims} spatial dimension(s))"
            )
        self.prediction = prediction

    @property
    def num_classes(self) -> int:
        """The number of classes (0 for an unconditional prior)."""
        return self.network.num_classes

    @property
    def factor(self) -> int:
        """The multiple :math:`2^{L - 1}` that image sides must be (``L`` resolution
        levels); :class:`priors.Tiled` pads other sizes."""
        return 2 ** (self.network.levels - 1)

    def forward(self, x_t: Tensor, t: Tensor, label: Tensor | int | None = None) -> Tensor:
        if x_t.ndim != len(self.shape) + 1 or x_t.shape[1] != self.shape[0]:
            sides = ", ".join(("H", "W") if len(self.shape) == 3 else ("T",))
            raise ValueError(
                f"x_t must have shape (B, {self.shape[0]}, {sides}), got {tuple(x_t.shape)}"
            )
        label = check_label(label, x_t.shape[0], self.num_classes)
        if label is not None:
            label = label.to(x_t.device)
        dtype = next(self.network.parameters()).dtype
        out = self.network(x_t.to(dtype), t.expand(x_t.shape[0]), label).to(x_t.dtype)
        if self.prediction == "flow":
            return x0_from_flow(x_t, out, *self.schedule(t), *self.schedule.derivatives(t))
        return x0_from_v(x_t, out, *self.schedule(t))
