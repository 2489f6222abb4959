r"""Attention maps of a prior's network: our U-Net's layers and diffusers' ``Attention``.

:func:`attention_layers` lists a model's attention layers by name, tagged by the part of
the U-Net they sit in (``down`` / ``mid`` / ``up``) and ending in ``self`` or ``cross``:

- our :class:`~priors.unet.Attention` layers keep their own names (``down.1.0.self``,
  ``mid.cross``, ...);
- diffusers' ``Attention`` modules (in ``down_blocks`` / ``mid_block`` / ``up_blocks`` of a
  ``UNet2DModel`` or ``UNet2DConditionModel``, e.g. loaded by
  :func:`priors.adapters.load_diffusers`) are named from their module path:
  ``mid.attentions.0.self``, ``down.1.attentions.0.transformer_blocks.0.attn2.cross``;
- deepinv's ``AttentionBlock`` modules of a guided-diffusion (ADM) ``DiffUNet`` (in
  ``input_blocks`` / ``middle_block`` / ``output_blocks``, e.g. loaded by
  :func:`priors.adapters.load_adm`) likewise: ``mid.1.self``, ``down.7.1.self``,
  ``up.12.1.self``.

:func:`record_attention` collects the probabilities :math:`(B, \text{heads}, N_q, N_k)` of
every pass inside its block. Ours pass them through an identity hook point. For diffusers,
the block swaps each module's processor for the classic ``AttnProcessor`` (which computes
the probabilities explicitly rather than through fused attention) and records
``get_attention_scores``; the processors are restored on exit. ADM's blocks compute
attention fused; a hook on their ``QKVAttention`` reads its packed ``qkv`` input and
recomputes :math:`\operatorname{softmax}(q^\top k / \sqrt{c})` per head in the block's
channel order (legacy or new), leaving the output untouched. In all cases the output is
the same up to floating-point reassociation.

:func:`identity_attention` perturbs instead of recording: inside its block the named
self-attention layers use the identity as their attention matrix, so each pixel attends
only to itself and the layer's attention output is its values (the perturbation of
perturbed-attention guidance, :class:`guided.PAG`). Ours return the identity from the
``maps`` hook point; diffusers' layers get the classic processor with
``get_attention_scores`` returning the identity; ADM's ``QKVAttention`` returns its
values.
"""

from __future__ import annotations

import contextlib
import math

from collections.abc import Callable, Iterable, Iterator

import torch

from torch import Tensor, nn

from priors.unet import Attention

__all__ = [
    "attention_layers",
    "identity_attention",
    "is_cross",
    "record_attention",
    "self_attention",
]

_BLOCKS = {
    "down_blocks": "down",
    "mid_block": "mid",
    "up_blocks": "up",
    "input_blocks": "down",  # ADM (deepinv's DiffUNet)
    "middle_block": "mid",
    "output_blocks": "up",
}


def _diffusers_attention() -> type | None:
    try:
        from diffusers.models.attention_processor import Attention as DiffusersAttention
    except ImportError:  # diffusers is an optional extra
        return None
    return DiffusersAttention


def _adm_attention() -> type:
    from deepinv.models.diffunet import AttentionBlock

    return AttentionBlock


def _block_name(path: str, kind: str) -> str | None:
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part in _BLOCKS:
            return ".".join([_BLOCKS[part], *parts[i + 1 :], kind])
    return None


def self_attention(model: nn.Module) -> list[str]:
    """The names of ``model``'s self-attention layers (:func:`attention_layers`), sorted."""
    return sorted(name for name, m in attention_layers(model).items() if not is_cross(m))


def is_cross(layer: nn.Module) -> bool:
    """Whether an attention layer attends to context tokens (cross) or to pixels (self)."""
    if isinstance(layer, Attention):
        return bool(layer.cross)
    return bool(getattr(layer, "is_cross_attention", False))  # ADM blocks are self-attention


def attention_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The attention layers of ``model`` by name (see the module)."""
    layers: dict[str, nn.Module] = {}
    theirs, adm = _diffusers_attention(), _adm_attention()
    for path, m in model.named_modules():
        if isinstance(m, Attention):
            layers[m.name] = m
            continue
        name = None
        if theirs is not None and isinstance(m, theirs):
            name = _block_name(path, "cross" if m.is_cross_attention else "self")
        elif isinstance(m, adm):
            name = _block_name(path, "self")
        if name is not None:
            layers[name] = m
    return layers


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    r"""Collects the attention maps of every forward pass of ``model`` inside the block.

    Yields a dict ``name -> maps`` holding the latest pass's maps, detached, shape
    :math:`(B, \text{heads}, N_q, N_k)`. Hooks and swapped processors are removed on exit.
    """
    maps: dict[str, Tensor] = {}
    undo = []
    try:
        for name, layer in attention_layers(model).items():
            if isinstance(layer, Attention):

                def hook(_: nn.Module, __: tuple, output: Tensor, name: str = name) -> None:
                    maps[name] = output.detach()

                undo.append(layer.maps.register_forward_hook(hook).remove)
            elif isinstance(layer, _adm_attention()):
                undo.append(_record_adm(layer, name, maps))
            else:
                undo.append(_record_diffusers(layer, name, maps))
        yield maps
    finally:
        for step in reversed(undo):
            step()


def _swap_scores(
    layer: nn.Module, scores: Callable[[Callable[..., Tensor]], Callable[..., Tensor]]
) -> Callable[[], None]:
    """Gives a diffusers ``Attention`` the classic processor (which computes its
    probabilities through ``get_attention_scores`` rather than fused) and replaces that
    method by ``scores(original)``; returns the undo."""
    from diffusers.models.attention_processor import AttnProcessor

    processor, original = layer.processor, layer.get_attention_scores
    layer.set_processor(AttnProcessor())
    layer.get_attention_scores = scores(original)

    def restore() -> None:
        del layer.get_attention_scores  # the instance attribute; the method shows again
        layer.set_processor(processor)

    return restore


def _record_diffusers(layer: nn.Module, name: str, maps: dict[str, Tensor]) -> Callable[[], None]:
    """Records a diffusers layer's probabilities (:func:`_swap_scores`); returns the undo."""

    def recording(original: Callable[..., Tensor]) -> Callable[..., Tensor]:
        def recorded(query: Tensor, key: Tensor, attention_mask: Tensor | None = None) -> Tensor:
            probs = original(query, key, attention_mask)
            maps[name] = probs.detach().reshape(-1, layer.heads, *probs.shape[1:])
            return probs

        return recorded

    return _swap_scores(layer, recording)


def _split_qkv(attention: nn.Module, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """An ADM ``QKVAttention``'s packed input :math:`(B, 3 h c, T)` as queries, keys and
    values :math:`(B, h, c, T)` each, in its channel order (legacy: heads first, then
    q / k / v; new: q / k / v first, then heads)."""
    from deepinv.models.diffunet import QKVAttentionLegacy

    batch, width, length = qkv.shape
    heads = attention.n_heads
    ch = width // (3 * heads)
    if isinstance(attention, QKVAttentionLegacy):
        return qkv.reshape(batch, heads, 3 * ch, length).split(ch, dim=2)
    return tuple(part.reshape(batch, heads, ch, length) for part in qkv.chunk(3, dim=1))


def _record_adm(layer: nn.Module, name: str, maps: dict[str, Tensor]) -> Callable[[], None]:
    """Hooks an ADM ``AttentionBlock``'s ``QKVAttention``: recomputes its probabilities from
    the packed input; returns the undo."""
    attention = layer.attention

    def hook(_: nn.Module, inputs: tuple[Tensor, ...], __: Tensor) -> None:
        q, k, _ = _split_qkv(attention, inputs[0].detach())
        logits = torch.einsum("bhcq,bhck->bhqk", q, k) / math.sqrt(q.shape[2])
        maps[name] = logits.softmax(-1)

    return attention.register_forward_hook(hook).remove


@contextlib.contextmanager
def identity_attention(model: nn.Module, layers: Iterable[str]) -> Iterator[None]:
    r"""Inside the block, the named self-attention layers of ``model`` attend each pixel to
    itself only (the attention matrix is the identity): each layer outputs its values
    through its output projection and residual, as before. Everything is restored on exit.

    Arguments:
        model: A network (or a denoiser holding one) with attention layers.
        layers: Names from :func:`attention_layers`, self-attention layers only.
    """
    names = list(layers)
    found = attention_layers(model)
    if not names or any(name not in found or is_cross(found[name]) for name in names):
        raise ValueError(
            f"layers must name self-attention layers of the model, got {names}; it has "
            f"{self_attention(model)}"
        )
    undo = []
    try:
        for name in names:
            layer = found[name]
            if isinstance(layer, Attention):

                def identity(_: nn.Module, __: tuple, probs: Tensor) -> Tensor:
                    eye = torch.eye(probs.shape[-1], dtype=probs.dtype, device=probs.device)
                    return eye.expand_as(probs)

                undo.append(layer.maps.register_forward_hook(identity).remove)
            elif isinstance(layer, _adm_attention()):
                undo.append(_identity_adm(layer))
            else:
                undo.append(_identity_diffusers(layer))
        yield
    finally:
        for step in reversed(undo):
            step()


def _identity_diffusers(layer: nn.Module) -> Callable[[], None]:
    """A diffusers layer with identity attention scores (:func:`_swap_scores`); returns the
    undo."""

    def identity(_: Callable[..., Tensor]) -> Callable[..., Tensor]:
        def scores(query: Tensor, key: Tensor, attention_mask: Tensor | None = None) -> Tensor:
            eye = torch.eye(key.shape[1], dtype=query.dtype, device=query.device)
            return eye.expand(query.shape[0], query.shape[1], key.shape[1])

        return scores

    return _swap_scores(layer, identity)


def _identity_adm(layer: nn.Module) -> Callable[[], None]:
    """ADM's ``QKVAttention`` returning its values :math:`(B, h c, T)` (what identity
    probabilities give); returns the undo."""
    attention = layer.attention

    def hook(_: nn.Module, inputs: tuple[Tensor, ...], __: Tensor) -> Tensor:
        v = _split_qkv(attention, inputs[0])[2]
        return v.reshape(v.shape[0], -1, v.shape[-1])

    return attention.register_forward_hook(hook).remove
