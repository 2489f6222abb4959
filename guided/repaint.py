r"""RePaint: ancestral sampling with replacement and resampling ("time travel").

Each downward transition :math:`t \to s` is an ancestral (DDPM) step followed by the
:class:`~guided.replacement.Replacement` of the observed part by the forward-noised
measurement. Replacement alone harmonises poorly: the unknown region sees the known one only
through one denoiser call per step. RePaint therefore walks the grid back up now and then,
re-noising the state with the forward kernel

.. math:: x_u = \frac{\alpha_u}{\alpha_s} x_s + \sqrt{\sigma_u^2 - \frac{\alpha_u^2}{\alpha_s^2}
    \sigma_s^2}\, z, \qquad u > s,

and samples the segment again. With jump length :math:`j` and :math:`r` resamplings, the
sampler goes back :math:`j` grid points, :math:`r - 1` times, whenever :math:`k = 1, j + 1,
2j + 1, \dots < N - j + 1` steps remain (the schedule of the authors' ``get_schedule_jump``,
whose time index :math:`t = k - 1` jumps from :math:`t = 0, j, 2j, \dots`); the clean sample
(:math:`k = 0`) is never re-noised. A run costs about :math:`r N` network evaluations on an
:math:`N`-step grid.

References:
    | RePaint: Inpainting using Denoising Diffusion Probabilistic Models (Lugmayr et al., 2022)
    | https://arxiv.org/abs/2201.09865
"""

from __future__ import annotations

import itertools
import math

from torch import Tensor

import checks

from guided.ddim import ddim_update
from guided.replacement import Replacement
from guided.sampler import Run, Sampler, SamplerState, Step
from operators import LinearOperator
from priors import randn

__all__ = ["RePaint"]


class RePaint(Sampler):
    r"""RePaint with time travel (see the module).

    Arguments:
        op: A linear operator with a pseudo-inverse (an inpainting mask in the paper).
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows (the observed part
            is replaced by it).
        sigma_y: Its noise level (see :class:`~guided.replacement.Replacement`: with noise
            the operator must not amplify it).
        jump: The jump length :math:`j` (the paper uses 10 on 250 steps).
        resamplings: The number :math:`r` of passes over each segment (1 = no time travel;
            the paper uses 10).
    """

    pure_noise = True  # a jump back up divides by alpha at its lower time, never at t = 1

    def __init__(
        self,
        op: LinearOperator,
        y: Tensor,
        jump: int = 10,
        resamplings: int = 10,
        sigma_y: float = 0.0,
    ) -> None:
        self.replace = Replacement(op, y, sigma_y)
        self.jump = checks.integer(jump, "jump", low=1)
        self.resamplings = checks.integer(resamplings, "resamplings", low=1)

    def pairs(self, ts: Tensor) -> list[tuple[Tensor, Tensor]]:
        n = ts.numel() - 1
        # the authors jump from their index t = 0, j, 2j, ... < N - j, i.e. k = t + 1 to go
        left = {t + 1: self.resamplings - 1 for t in range(0, n - self.jump, self.jump)}
        path, k = [n], n  # k: steps still to go (index n - k on the grid)
        while k > 0:
            k -= 1
            path.append(k)
            if left.get(k, 0) > 0:
                left[k] -= 1
                for _ in range(self.jump):
                    k += 1
                    path.append(k)
        times = [ts[n - k] for k in path]
        return list(itertools.pairwise(times))

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        alpha_t, sigma_t, alpha_s, sigma_s = step.coefficients
        if step.s > step.t:  # back up: the forward kernel q(x_s | x_t)
            ratio = alpha_s / alpha_t
            z = randn(x_t.shape, run.generator, dtype=x_t.dtype, device=x_t.device)
            return ratio * x_t + math.sqrt(max(0.0, sigma_s**2 - ratio**2 * sigma_t**2)) * z
        x_hat = run.denoise(x_t, step.t)
        x_s = ddim_update(x_t, x_hat, *step.coefficients, 1.0, run.generator)
        return self.replace(x_s, step.s, run.schedule, run.generator)
