r"""Pixel measurements of a latent prior's samples.

A :class:`~priors.LatentPrior` samples latents :math:`z`; images are :math:`x = D(z)` and a
measurement :math:`y = A(x) + n` is taken in pixel space. On latents the measurement's
operator is the composition :math:`A \circ D` (:class:`Decoded`), differentiable when
:math:`A` is (through the decoder's autograd graph), never linear. Every method that only
needs a differentiable operator therefore runs in latent space on ``Decoded(op,
prior.autoencoder)``; the latent methods (:class:`~guided.LatentDPS`, :class:`~guided.PSLD`,
:class:`~guided.ReSample`, :class:`~guided.LatentDAPS`) take the pixel operator and build the
composition from the prior they are run with (:class:`LatentMethod`), and refuse a pixel
prior. Decoder passes and VJPs through the decoder are counted in the run's
:class:`~priors.Cost` beside the network's.
"""

from __future__ import annotations

import abc

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor

from operators import Operator
from priors import Autoencoder, Denoiser, latent_of, record

__all__ = ["Decoded", "LatentMethod"]


class Decoded(Operator):
    r"""The operator :math:`A \circ D` on latents: decode, then measure (see the module).

    Arguments:
        op: The pixel-space operator :math:`A`; its input shape must be the autoencoder's
            image shape.
        autoencoder: The autoencoder whose decoder :math:`D` makes images of latents.
    """

    supports_half: ClassVar[bool] = False

    def __init__(self, op: Operator, autoencoder: Autoencoder) -> None:
        if not isinstance(op, Operator):
            raise TypeError(f"op must be an operators.Operator, got {type(op).__name__}")
        if not isinstance(autoencoder, Autoencoder):
            raise TypeError(
                f"autoencoder must be a priors.Autoencoder, got {type(autoencoder).__name__}"
            )
        if op.in_shape != autoencoder.shape:
            raise ValueError(
                f"op takes images of shape {op.in_shape}, the autoencoder decodes to "
                f"{autoencoder.shape}: the operator must measure the decoded images"
            )
        super().__init__(autoencoder.latent_shape, op.out_shape)
        self.op, self.autoencoder = op, autoencoder
        self.differentiable = op.differentiable  # the decoder is; the composition is if A is

    def apply(self, z: Tensor) -> Tensor:
        return self.op(self.autoencoder.decode(z))

    def vjp(self, z: Tensor, v: Tensor) -> Tensor:
        r""":math:`J_D(z)^\top J_A(D(z))^\top v` (one decoder pass and one VJP through it per
        row)."""
        g = super().vjp(z, v)
        record(decoder_vjp_rows=z.shape[0])
        return g

    def linearize(self, z: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        r""":math:`A(D(z))` and :math:`v \mapsto J_D^\top J_A^\top v` from one decoder pass (the
        VJP through the decoder is counted when the map is called)."""
        out, pullback = super().linearize(z)

        def counted(v: Tensor) -> Tensor:
            g = pullback(v)
            record(decoder_vjp_rows=z.shape[0])
            return g

        return out, counted


class LatentMethod(abc.ABC):
    r"""Mixin of the latent methods' samplers: a run must be given a denoiser that is (or
    wraps) a :class:`~priors.LatentPrior`, and before it starts the method binds its pixel
    operator to that prior's autoencoder (:meth:`bind`), so one method object serves any
    latent prior whose decoder makes images its operator measures.

    Subclasses keep the pixel operator as ``pixel_op`` (not ``op``, which the run's checks
    read as an operator on the sampler's own variables) and set ``method`` and ``instead``
    (the pixel method to use on a pixel prior) for the refusal.
    """

    method: ClassVar[str]
    instead: ClassVar[str]
    pixel_op: Operator

    @abc.abstractmethod
    def bind(self, autoencoder: Autoencoder) -> None:
        """Builds the method's latent-space parts for ``autoencoder`` (called at each run)."""

    def guided(self, denoiser: Denoiser) -> Denoiser:
        """The denoiser the run walks, after :meth:`bind` (``denoiser`` itself by default;
        methods written as guidance terms wrap it)."""
        return denoiser

    def __call__(self, denoiser: Denoiser, x_T: Tensor, ts: Tensor, **kwargs: Any) -> Tensor:
        prior = latent_of(denoiser) if isinstance(denoiser, Denoiser) else None
        if prior is None:
            raise TypeError(
                f"{self.method} samples the latents of a priors.LatentPrior and measures their "
                f"decoded images; got {type(denoiser).__name__}, a pixel prior (for a pixel prior "
                f"use {self.instead})"
            )
        self.bind(prior.autoencoder)
        return super().__call__(self.guided(denoiser), x_T, ts, **kwargs)  # type: ignore[misc]
