r"""Peer implementations run on our priors and operators, for side-by-side figures.

:class:`DeepinvDPS` runs deepinv's own DPS loop (its variance-preserving SDE and DDPM solver)
on one of our denoisers through :class:`priors.adapters.DeepinvDenoiser` and on our operator
through :func:`operators.as_deepinv`; images and measurements are converted between our
:math:`[-1, 1]` range and deepinv's :math:`[0, 1]` at the boundary only.

References:
    | DeepInverse: a Python package for solving imaging inverse problems with deep learning
    | https://deepinv.github.io
"""

from __future__ import annotations

import torch

from torch import Tensor

import operators
import priors

from priors import GeneratorLike
from priors.adapters import DeepinvDenoiser

__all__ = ["DeepinvDPS"]


class DeepinvDPS:
    r"""``deepinv.sampling.DPS`` as a method of our apps: ``len(ts) - 1`` solver steps.

    deepinv draws its noise from torch's global generator; the call forks it and seeds it
    from ``generator`` (the first one when one per row is given), so runs are reproducible
    and leave the caller's global state alone. deepinv takes one backward pass per step,
    which is added to ``cost`` as one VJP per step and row.

    Arguments:
        op: Our operator.
        y: Our measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: Our noise level.
        weight: deepinv's data-fidelity weight (1 = the paper's :math:`\zeta = 1`).
    """

    def __init__(
        self, op: operators.Operator, y: Tensor, sigma_y: float, weight: float = 1.0
    ) -> None:
        if not op.differentiable:
            raise TypeError(f"DPS needs a differentiable operator; {type(op).__name__} is not")
        self.op, self.y, self.weight = op, y if y.ndim > len(op.out_shape) else y[None], weight
        self.physics = operators.as_deepinv(op, sigma_y, dtype=torch.float32)

    def __call__(
        self,
        denoiser: priors.Denoiser,
        x_T: Tensor,
        ts: Tensor,
        *,
        generator: GeneratorLike = None,
        cost: priors.Cost | None = None,
    ) -> Tensor:
        import deepinv

        rows = x_T.shape[0]
        first = generator[0] if isinstance(generator, list | tuple) else generator
        seed = int(torch.randint(2**62, (), generator=first))
        y01 = operators.measurement_to_deepinv(self.op, self.y.float()).expand(
            rows, *self.op.out_shape
        )
        steps = int(torch.as_tensor(ts).numel()) - 1
        dps = deepinv.sampling.DPS(
            DeepinvDenoiser(denoiser),
            num_steps=steps,
            weight=self.weight,
            dtype=torch.float32,
            rng=torch.Generator().manual_seed(seed),
        )
        with torch.random.fork_rng(), priors.measure(cost or priors.Cost(), batch=rows):
            torch.manual_seed(seed)
            x01 = dps(y01.contiguous(), self.physics)
            priors.record(vjp_rows=rows * steps)
        return (2 * x01 - 1).to(x_T.dtype)
