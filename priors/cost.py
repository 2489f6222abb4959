r"""Cost accounting: network evaluations and vector-Jacobian products, and the calls of a
latent prior's autoencoder.

Leaf denoisers (networks and analytic priors) record the rows they evaluate; guidance
terms record the rows through which they back-propagate; a :class:`~priors.Autoencoder`
records the rows it encodes and decodes, and what back-propagates through it records those
rows as encoder or decoder VJPs. A :func:`measure` block turns
those row counts into a per-sample :class:`Cost` (``rows / batch``), so a classifier-free
wrapper that evaluates a doubled batch counts two evaluations per sample, and a particle
sampler with :math:`K` particles per sample counts :math:`K` per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["Cost", "measure", "paused", "record"]


@dataclass
class Cost:
    """Per-sample cost of a run.

    Attributes:
        nfe: Network evaluations per sample.
        vjp: Vector-Jacobian products (backward passes through the network) per sample.
        decoder: Decoder passes of a latent prior's autoencoder per sample.
        decoder_vjp: Backward passes through the decoder per sample.
        encoder: Encoder passes per sample.
        encoder_vjp: Backward passes through the encoder per sample.
    """

    nfe: float = 0.0
    vjp: float = 0.0
    decoder: float = 0.0
    decoder_vjp: float = 0.0
    encoder: float = 0.0
    encoder_vjp: float = 0.0


_FIELDS = ("nfe", "vjp", "decoder", "decoder_vjp", "encoder", "encoder_vjp")


@dataclass
class _Rows:
    nfe: int = 0
    vjp: int = 0
    decoder: int = 0
    decoder_vjp: int = 0
    encoder: int = 0
    encoder_vjp: int = 0


_active: ContextVar[tuple[_Rows, ...]] = ContextVar("priors_cost_meters", default=())
_paused: ContextVar[bool] = ContextVar("priors_cost_paused", default=False)


def record(
    *,
    nfe_rows: int = 0,
    vjp_rows: int = 0,
    decoder_rows: int = 0,
    decoder_vjp_rows: int = 0,
    encoder_rows: int = 0,
    encoder_vjp_rows: int = 0,
) -> None:
    """Adds evaluated rows to every open :func:`measure` block (a no-op when none is open,
    or inside :func:`paused`)."""
    if _paused.get():
        return
    for rows in _active.get():
        rows.nfe += nfe_rows
        rows.vjp += vjp_rows
        rows.decoder += decoder_rows
        rows.decoder_vjp += decoder_vjp_rows
        rows.encoder += encoder_rows
        rows.encoder_vjp += encoder_vjp_rows


@contextmanager
def measure(cost: Cost, batch: int) -> Iterator[Cost]:
    """Adds the per-sample cost of the enclosed work to ``cost``; blocks may nest."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rows = _Rows()
    token = _active.set(_active.get() + (rows,))
    try:
        yield cost
    finally:
        _active.reset(token)
        for name in _FIELDS:
            setattr(cost, name, getattr(cost, name) + getattr(rows, name) / batch)


@contextmanager
def paused() -> Iterator[None]:
    """Nothing evaluated inside is recorded: for work that repeats an evaluation already
    counted (a forward pass recomputed to save memory, :class:`priors.Tiled`)."""
    token = _paused.set(True)
    try:
        yield
    finally:
        _paused.reset(token)
