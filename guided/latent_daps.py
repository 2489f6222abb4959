r"""Latent DAPS: decoupled annealing posterior sampling on a latent prior.

DAPS (:class:`~guided.DAPS`) runs unchanged on the latents with the operator :math:`A \circ D`
(:class:`~guided.Decoded`): the prior step solves the latent probability-flow ODE to a clean
latent estimate :math:`\hat z_0`, the likelihood step samples

.. math:: \pi(z_0) \propto \exp\Big(-\frac{\lVert z_0 - \hat z_0 \rVert^2}{2 \bar\sigma_t^2}
    - \frac{\lVert y - A(D(z_0)) \rVert^2}{2 \tau^2}\Big)

by Langevin or damped Hamiltonian steps in latent space (each a decoder pass and a VJP
through it), and the next latent is :math:`\alpha_s z_0 + \sigma_s \epsilon`. This is the
authors' ``LatentDAPS`` (``sampler.py`` of ``zhangbingliang2019/DAPS``, which wraps the
operator as ``LatentWrapper``), with their latent settings as defaults: the gradient of the
data term clamped entry-wise (their clamp of :math:`\nabla \lVert A(D(z)) - y \rVert^2` to
:math:`[-1, 1]`, ``clip`` :math:`= 1/2` in our units, :mod:`guided.langevin`), and the damped
Hamiltonian dynamics of their ``ldm`` box-inpainting configuration (``configs/task/
inpainting.yaml``: 15 steps, ``lr`` :math:`9.02 \cdot 10^{-6}`, ``lr_min_ratio`` 0.13,
``momentum`` 0.74, ``tau`` 0.01, i.e. our :math:`\tau = 0.01 / \sqrt 2`). Their latent run
anneals :math:`\bar\sigma` from 10 to 0.1 in 50 steps with 2 ODE steps down to 0.001
(``configs/sampler/latent_edm_daps.yaml``): ``time_grid(50, "karras", schedule=...,
sigma_min=0.1)`` with ``ode_steps=2, sigma_min=0.001`` here, from the schedule's top level.

**Departures** are DAPS's (see :mod:`guided.daps`); besides, their loop decodes the estimates
and the state at every step to record them; ours decodes only where the likelihood needs it,
and returns latents (``prior.decode`` makes the images).

References:
    | Improving Diffusion Inverse Problem Solving with Decoupled Noise Annealing
    | (Zhang, Chu, Berner, Meng, Anandkumar & Song, CVPR 2025) https://arxiv.org/abs/2407.01521
"""

from __future__ import annotations

import math

from typing import ClassVar

from torch import Tensor

from guided.daps import DAPS
from guided.langevin import LangevinLikelihood
from guided.latent import Decoded, LatentMethod
from operators import Operator
from priors import Autoencoder

__all__ = ["LatentDAPS"]


class LatentDAPS(LatentMethod, DAPS):
    r"""DAPS on the latents of a :class:`~priors.LatentPrior` (see the module). Run as
    ``method(latent_prior, z_T, ts)``; it returns latents.

    Arguments:
        op: A differentiable pixel-space operator.
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The measurement's noise level (for the divergence check; the target uses
            ``tau``).
        tau: The likelihood's standard deviation :math:`\tau > 0`.
        ode_steps: Euler steps of the inner latent ODE per annealing step.
        langevin_steps: Langevin (or Hamiltonian) steps per annealing step.
        step_size: The step size :math:`\eta` at the start of the run.
        decay: The ratio of the last step size to the first.
        sigma_min: The noise level where the inner ODE stops.
        momentum: The damped Hamiltonian dynamics' :math:`m \in [0, 1)` (0: Langevin).
        clip: The bound on each entry of the data term's gradient (None: none).
    """

    method: ClassVar[str] = "LatentDAPS"
    instead: ClassVar[str] = "guided.DAPS"

    def __init__(
        self,
        op: Operator,
        y: Tensor,
        sigma_y: float,
        *,
        tau: float = 0.01 / math.sqrt(2),
        ode_steps: int = 2,
        langevin_steps: int = 15,
        step_size: float = 9.02e-6,
        decay: float = 0.13,
        sigma_min: float = 0.001,
        momentum: float = 0.74,
        clip: float | None = 0.5,
    ) -> None:
        super().__init__(
            op, y, sigma_y, tau=tau, ode_steps=ode_steps, langevin_steps=langevin_steps,
            step_size=step_size, decay=decay, sigma_min=sigma_min,
        )  # fmt: skip
        self.pixel_op = op
        self.momentum, self.clip = momentum, clip
        # the pixel operator's likelihood checks momentum and clip now; a run replaces it
        self.likelihood = LangevinLikelihood(op, self.y, self.tau, momentum=momentum, clip=clip)
        del self.op  # bound to the latents at each run (guided.latent.LatentMethod)

    def bind(self, autoencoder: Autoencoder) -> None:
        self.op = Decoded(self.pixel_op, autoencoder)
        self.likelihood = LangevinLikelihood(
            self.op, self.y, self.tau, momentum=self.momentum, clip=self.clip
        )
