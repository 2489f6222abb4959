r"""Post-step projections.

A projection maps the sampler's state :math:`x_s` after each step to a corrected state at
the same time :math:`s`: replacement methods (RePaint, score-SDE inpainting) and null-space
methods (DDNM) are projections, so they run after any sampler's step.
"""

from __future__ import annotations

import abc

from torch import Tensor

from priors import GeneratorLike, Schedule

__all__ = ["Projection"]


class Projection(abc.ABC):
    r"""Abstract post-step correction :math:`x_s \mapsto x_s'`."""

    @abc.abstractmethod
    def __call__(
        self, x_s: Tensor, s: Tensor, schedule: Schedule, generator: GeneratorLike = None
    ) -> Tensor:
        r"""
        Arguments:
            x_s: The state after a sampler step, with shape :math:`(B, *)`.
            s: The time of ``x_s``, with shape :math:`()`.
            schedule: The schedule of the denoiser being sampled.
            generator: The sampler's random stream.

        Returns:
            The corrected state, with shape :math:`(B, *)`.
        """
