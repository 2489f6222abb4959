r"""AutoGuidance: guide a model by a worse version of itself.

With the main model's prediction :math:`\hat x_1` and a weaker model's :math:`\hat x_0` (the
same task and conditioning, but smaller and/or trained for less), both at the same
:math:`(x_t, t)` and conditions,

.. math:: \tilde x = \hat x_0 + w\,(\hat x_1 - \hat x_0)

(Karras et al., §3, in the denoised parameterisation where they write it): :math:`w = 1`
is the main model, :math:`w > 1` extrapolates away from the weak model's errors. Unlike
classifier-free guidance the two predictions share the condition, so it improves an
unconditional model as well, and the paper argues its effect is to sharpen where the main
model is already right rather than to push towards the condition. Two network evaluations per
row (the weak one is cheaper; both count as one NFE here). The weak model must share the
prior's schedule, sample shape and conditioning, which are checked on construction.

**The weak model.** The paper's guiding models are smaller and shorter-trained versions of
the main model (same architecture family, data and conditioning). Ours for
the shipped digits prior is ``priors.load("digits-weak")``: the digits U-Net with a quarter
of the channels and one residual block per level, trained by the training app for fewer
steps (``python -m experiments.training.train prior=digits-weak``; its card gives the
command, steps and metrics).

References:
    | Guiding a Diffusion Model with a Bad Version of Itself
    | (Karras, Aittala, Kynkäänniemi, Lehtinen, Aila & Laine, NeurIPS 2024)
    | https://arxiv.org/abs/2406.02507
"""

from __future__ import annotations

from typing import Any

import torch

from torch import Tensor

import checks

from priors import Denoiser, Wrapper

__all__ = ["AutoGuidance"]


class AutoGuidance(Wrapper):
    r"""AutoGuidance of ``prior`` by ``weak`` (see the module).

    Arguments:
        prior: The main denoiser.
        weak: The weaker denoiser of the same data, schedule, shape and conditions.
        scale: :math:`w \ge 0` (1: the main model; 0: the weak one).
    """

    def __init__(self, prior: Denoiser, weak: Denoiser, scale: float) -> None:
        for name, value in (("prior", prior), ("weak", weak)):
            if not isinstance(value, Denoiser):
                raise TypeError(f"{name} must be a priors.Denoiser, got {type(value).__name__}")
        times = torch.linspace(0, 1, 11, dtype=torch.float64)
        if type(weak.schedule) is not type(prior.schedule) or not all(
            torch.allclose(a, b)
            for a, b in zip(weak.schedule(times), prior.schedule(times), strict=True)
        ):
            raise ValueError(
                f"weak must share the prior's schedule ({type(prior.schedule).__name__}), got "
                f"{type(weak.schedule).__name__} with other coefficients"
            )
        for attribute in ("shape", "num_classes", "conditions"):
            mine, theirs = getattr(prior, attribute, None), getattr(weak, attribute, None)
            if mine != theirs:
                raise ValueError(
                    f"weak must share the prior's {attribute} ({mine!r}), got {theirs!r}"
                )
        super().__init__(prior)
        self.weak = weak
        self.scale = checks.number(scale, "scale", low=0)

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        x_hat = self.prior(x_t, t, **cond)
        if self.scale == 1:
            return x_hat
        x_weak = self.weak(x_t, t, **cond)
        return x_weak + self.scale * (x_hat - x_weak)
