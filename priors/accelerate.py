r"""Faster network evaluation on accelerators: mixed precision, ``torch.compile`` and the
channels-last memory format, as a denoiser wrapper.

:class:`Accelerated` runs the wrapped denoiser under :func:`torch.autocast`: convolutions,
matrix products and attention run in ``dtype`` (bf16 or fp16), while autocast keeps
normalisations, softmax and reductions in float32. The wrapped denoiser casts its network's
output back to the input's dtype before the schedule arithmetic (the :math:`v \to \hat x`
conversion), so the sampler, the guidance terms and every coefficient stay in the input's
precision; only the network's own rounding changes. Gradients flow through autocast, so
guidance that differentiates the denoiser (DPS, PiGDM) works unchanged.

``compile=True`` replaces the wrapped denoiser's ``network`` by ``torch.compile(network)``
(the validation around it stays eager); ``channels_last=True`` stores the network's
weights and its image inputs in the NHWC layout that tensor cores prefer. With the default
arguments the wrapper changes nothing, so CPU runs are bit-identical.

References:
    | Mixed Precision Training (Micikevicius et al., 2018) https://arxiv.org/abs/1710.03740
"""

from __future__ import annotations

from typing import Any

import torch

from torch import Tensor

from priors.denoiser import Denoiser, Wrapper

__all__ = ["Accelerated"]

_DTYPES = {None: None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Accelerated(Wrapper):
    r"""A denoiser whose network runs in mixed precision, compiled, channels-last.

    Arguments:
        denoiser: The denoiser to accelerate (for ``compile``, one with a ``network``
            attribute: :class:`~priors.UNetDenoiser`, :class:`~priors.MLPDenoiser`).
        precision: ``"fp32"`` (no autocast), ``"bf16"`` or ``"fp16"`` (GPU only).
        compile: Whether to compile the network with :func:`torch.compile`.
        channels_last: Whether to use the channels-last layout (4-D image inputs).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        precision: str = "fp32",
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser must be a priors.Denoiser, got {type(denoiser).__name__}")
        if precision not in _DTYPES:
            raise ValueError(f"precision must be one of fp32, bf16, fp16; got {precision!r}")
        network = getattr(denoiser, "network", None)
        if (compile or channels_last) and not isinstance(network, torch.nn.Module):
            raise ValueError(
                f"{type(denoiser).__name__} has no network to compile or lay out channels-last"
            )
        super().__init__(denoiser)
        self.precision, self.dtype = precision, _DTYPES[precision]
        self.channels_last = bool(channels_last)
        if self.channels_last:
            network.to(memory_format=torch.channels_last)
        if compile:
            denoiser.network = torch.compile(network)

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        if self.channels_last and x_t.ndim == 4:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        device = x_t.device.type
        if self.dtype is None:
            return self.prior(x_t, t, **cond)
        if device == "cpu" and self.dtype == torch.float16:
            raise ValueError("fp16 autocast needs a GPU; use bf16 (or fp32) on a CPU")
        with torch.autocast(device, dtype=self.dtype):
            x_hat = self.prior(x_t, t, **cond)
        return x_hat.to(x_t.dtype)
