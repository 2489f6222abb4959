r"""A U-Net for diffusion priors and noise-conditional classifiers, with inspectable attention.

The architecture follows DDPM / ADM: residual blocks conditioned on a sinusoidal embedding of
the time (and a learned class embedding, with index ``num_classes`` as the *null* class used
for condition dropout), strided-convolution downsampling, nearest-neighbour upsampling, skip
connections, and multi-head attention at the resolutions listed in ``attention``: self
attention over pixels and, when ``context_dim`` is set, cross attention from pixels to
conditioning tokens (for example learned class tokens, ``class_tokens``).

Every attention layer computes its probabilities explicitly and passes them through an
identity module ``maps``; a forward hook on it sees the maps, shape
:math:`(B, \text{heads}, N_q, N_k)` with :math:`N_q = h w` pixels of the layer's resolution
and :math:`N_k = N_q` (self) or the number of tokens (cross), without changing the output.
:func:`priors.attention.attention_layers` lists the layers by name (``down.1.0.self``,
``mid.cross``, ...; the first part is the tag ``down`` / ``mid`` / ``up``) and
:func:`priors.attention.record_attention` collects their maps.

References:
    | Denoising Diffusion Probabilistic Models (Ho et al., 2020) https://arxiv.org/abs/2006.11239
    | Diffusion Models Beat GANs on Image Synthesis (Dhariwal & Nichol, 2021)
    | https://arxiv.org/abs/2105.05233
    | High-Resolution Image Synthesis with Latent Diffusion Models (Rombach et al., 2022),
    | cross attention to conditioning tokens https://arxiv.org/abs/2112.10752
"""

from __future__ import annotations

import math

from collections.abc import Sequence

import torch

from torch import Tensor, nn

import checks

from priors.embedding import timestep_embedding

__all__ = ["Attention", "PixelNorm", "ResBlock", "UNet"]


class PixelNorm(nn.Module):
    """Layer normalisation over the channels of each pixel separately (with a learned scale
    and shift per channel): local, unlike group normalisation, which pools statistics over
    the whole image."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def _conv(dims: int) -> type[nn.Conv1d | nn.Conv2d]:
    """The convolution of ``dims`` spatial dimensions (1 or 2)."""
    return nn.Conv1d if dims == 1 else nn.Conv2d


def _norm(channels: int, groups: int) -> nn.Module:
    """The normalisation layer: ``groups`` > 0 is group normalisation, -1 is
    :class:`PixelNorm`, 0 is none (see :class:`UNet`)."""
    groups = checks.integer(
        groups, "groups (> 0: group normalisation, -1: per pixel, 0: none)", low=-1
    )
    if groups == 0:
        return nn.Identity()
    if groups == -1:
        return PixelNorm(channels)
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    r"""Residual block with scale-shift conditioning on an embedding (ADM's "BigGAN" block
    without resampling): :math:`h = x + \mathrm{conv}(\phi(\mathrm{norm}(\cdot)(1 + s) + b))`.

    Arguments:
        channels: Input channels.
        out_channels: Output channels.
        emb_dim: The conditioning embedding's size.
        dropout: Dropout before the second convolution.
        groups: Group-norm groups (-1: per pixel, 0: none).
        dims: Spatial dimensions: 2 (images) or 1 (signals).
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        emb_dim: int,
        dropout: float,
        groups: int,
        dims: int = 2,
    ) -> None:
        super().__init__()
        conv = _conv(dims)
        self.norm1 = _norm(channels, groups)
        self.conv1 = conv(channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = _norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if channels == out_channels else conv(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        emb = self.emb(nn.functional.silu(emb))
        scale, shift = emb.view(*emb.shape, *[1] * (x.ndim - 2)).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(nn.functional.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    r"""Multi-head attention from the pixels of a feature map :math:`(B, C, H, W)` (or the
    positions of a signal's, :math:`(B, C, T)`) to the same pixels (self) or to context tokens
    :math:`(B, T, D)` (cross), with a residual connection. The probabilities pass through
    ``maps`` (an identity) for hooks.

    Arguments:
        channels: Feature channels :math:`C` (divisible by ``heads``).
        heads: Attention heads.
        context_dim: :math:`D` for cross attention; ``None`` for self attention.
        groups: Group-norm groups (-1: per pixel, 0: none).
        name: The layer's name, tagged ``down`` / ``mid`` / ``up``.
    """

    def __init__(
        self, channels: int, heads: int, context_dim: int | None, groups: int, name: str
    ) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads, self.name = heads, name
        self.cross = context_dim is not None
        self.norm = _norm(channels, groups)
        self.q = nn.Linear(channels, channels)
        kv_dim = channels if context_dim is None else context_dim
        self.context_norm = nn.LayerNorm(kv_dim) if self.cross else nn.Identity()
        self.kv = nn.Linear(kv_dim, 2 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.maps = nn.Identity()

    @property
    def tag(self) -> str:
        """``down``, ``mid`` or ``up``."""
        return self.name.split(".")[0]

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        c = x.shape[1]
        pixels = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        if self.cross:
            if context is None:
                raise ValueError(f"cross-attention layer {self.name} needs context tokens")
            source = self.context_norm(context)
        else:
            source = pixels
        q = self.q(pixels)
        k, v = self.kv(source).chunk(2, dim=-1)

        def heads(z: Tensor) -> Tensor:
            return z.unflatten(-1, (self.heads, c // self.heads)).transpose(1, 2)

        q, k, v = heads(q), heads(k), heads(v)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // self.heads), dim=-1)
        probs = self.maps(probs)  # (B, heads, HW, T): the hook point
        out = (probs @ v).transpose(1, 2).flatten(2)
        return x + self.out(out).transpose(1, 2).reshape(x.shape)


class _Stage(nn.Module):
    """A residual block followed by the attention layers of its resolution."""

    def __init__(self, block: ResBlock, attentions: Sequence[Attention]) -> None:
        super().__init__()
        self.block = block
        self.attentions = nn.ModuleList(attentions)

    def forward(self, x: Tensor, emb: Tensor, context: Tensor | None) -> Tensor:
        x = self.block(x, emb)
        for attention in self.attentions:
            x = attention(x, context)
        return x


class UNet(nn.Module):
    r"""The U-Net :math:`(x, t, \text{label}) \mapsto` output of the input's spatial size.

    Arguments:
        in_channels: Input channels.
        out_channels: Output channels (``in_channels`` by default).
        channels: Channels per resolution level; level :math:`i` works at
            :math:`H / 2^i`, so :math:`H` and :math:`W` must be divisible by
            :math:`2^{\text{levels} - 1}`.
        blocks: Residual blocks per level on the way down (one more on the way up).
        attention: For each level, whether it has attention layers (the middle block always
            has them when any level does).
        heads: Attention heads.
        num_classes: Classes of the class embedding (0: unconditional network). Label
            ``num_classes`` is the null class used for condition dropout.
        class_tokens: Learned context tokens per class for cross attention (0: none).
        context_dim: Size of context tokens for cross attention (``None``: no cross
            attention); required when ``class_tokens > 0``.
        dropout: Dropout in the residual blocks.
        groups: Group-norm groups; -1 normalises each pixel over its channels instead
            (:class:`PixelNorm`), 0 removes every normalisation. With -1 or 0 the output at
            a pixel depends only on the input within the receptive field (group norm pools
            statistics over the whole image), so the network gives the same values on an
            image and on tiles of it away from the tile borders, which is what restoration
            of images larger than the training crops needs.
        encoder_only: Keep only the down path and middle block (for classifiers).
        dims: Spatial dimensions: 2 for images :math:`(B, C, H, W)`, 1 for signals
            :math:`(B, C, T)` (one-dimensional convolutions and resampling; the same blocks,
            attention over the positions).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        channels: Sequence[int] = (32, 64, 64),
        blocks: int = 2,
        attention: Sequence[bool] = (False, True, True),
        heads: int = 4,
        num_classes: int = 0,
        class_tokens: int = 0,
        context_dim: int | None = None,
        dropout: float = 0.0,
        groups: int = 8,
        encoder_only: bool = False,
        dims: int = 2,
    ) -> None:
        super().__init__()
        self.dims = checks.integer(dims, "dims", low=1, high=2)
        conv = _conv(self.dims)
        channels, attention = list(channels), list(attention)
        if len(attention) != len(channels):
            raise ValueError("attention needs one flag per level of channels")
        if class_tokens and (context_dim is None or not num_classes):
            raise ValueError("class_tokens need num_classes > 0 and a context_dim")
        self.in_channels = in_channels
        self.levels = len(channels)
        self.num_classes = num_classes
        self.class_tokens = class_tokens
        self.context_dim = context_dim
        self.encoder_only = encoder_only
        emb_dim = 4 * channels[0]
        self.emb_dim = emb_dim
        self.time = nn.Sequential(
            nn.Linear(channels[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.tokens = (
            nn.Embedding(num_classes + 1, class_tokens * context_dim) if class_tokens else None
        )

        def attentions(ch: int, on: bool, name: str) -> list[Attention]:
            if not on:
                return []
            layers = [Attention(ch, heads, None, groups, f"{name}.self")]
            if context_dim is not None:
                layers.append(Attention(ch, heads, context_dim, groups, f"{name}.cross"))
            return layers

        self.stem = conv(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, ch = [channels[0]], channels[0]
        for i, (out, on) in enumerate(zip(channels, attention, strict=True)):
            stages = nn.ModuleList()
            for j in range(blocks):
                stages.append(
                    _Stage(
                        ResBlock(ch, out, emb_dim, dropout, groups, self.dims),
                        attentions(out, on, f"down.{i}.{j}"),
                    )
                )
                ch = out
                skips.append(ch)
            self.down.append(stages)
            if i < self.levels - 1:
                self.downsample.append(conv(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList(
            [
                _Stage(
                    ResBlock(ch, ch, emb_dim, dropout, groups, self.dims),
                    attentions(ch, any(attention), "mid"),
                ),
                _Stage(ResBlock(ch, ch, emb_dim, dropout, groups, self.dims), []),
            ]
        )
        self.out_features = ch
        if encoder_only:
            return
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(self.levels)):
            out, on = channels[i], attention[i]
            stages = nn.ModuleList()
            for j in range(blocks + 1):
                stages.append(
                    _Stage(
                        ResBlock(ch + skips.pop(), out, emb_dim, dropout, groups, self.dims),
                        attentions(out, on, f"up.{i}.{j}"),
                    )
                )
                ch = out
            self.up.append(stages)
            if i > 0:
                self.upsample.append(conv(ch, ch, 3, padding=1))
        self.head = nn.Sequential(
            _norm(ch, groups), nn.SiLU(), conv(ch, out_channels or in_channels, 3, padding=1)
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def _labels(self, label: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if label is None:
            return torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
        return torch.where(label < 0, self.num_classes, label)

    def embed(self, x: Tensor, t: Tensor, label: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The conditioning embedding :math:`(B, E)` and the class tokens (or ``None``)."""
        emb = self.time(timestep_embedding(t, self.time[0].in_features).to(x.dtype))
        tokens = None
        if self.num_classes:
            labels = self._labels(label, x.shape[0], x.device)
            emb = emb + self.label(labels)
            if self.tokens is not None:
                tokens = self.tokens(labels).unflatten(-1, (self.class_tokens, self.context_dim))
        return emb, tokens

    def encode(
        self, x: Tensor, t: Tensor, label: Tensor | None = None, context: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor], Tensor, Tensor | None]:
        """The down path and middle block: features, skips, embedding and context."""
        factor = 2 ** (self.levels - 1)
        sides = ("H", "W") if self.dims == 2 else ("T",)
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (B, {self.in_channels}, {', '.join(sides)}), "
                f"got {tuple(x.shape)}"
            )
        if any(n % factor for n in x.shape[2:]):
            raise ValueError(
                f"{' and '.join(sides)} must be divisible by {factor}, got {tuple(x.shape[2:])}"
            )
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        emb, tokens = self.embed(x, t, label)
        if context is None:
            context = tokens
        h = self.stem(x)
        skips = [h]
        for i, stages in enumerate(self.down):
            for stage in stages:
                h = stage(h, emb, context)
                skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                skips.append(h)
        for stage in self.mid:
            h = stage(h, emb, context)
        return h, skips, emb, context

    def forward(
        self, x: Tensor, t: Tensor, label: Tensor | None = None, context: Tensor | None = None
    ) -> Tensor:
        r"""
        Arguments:
            x: Input :math:`(B, C_{in}, H, W)` (:math:`(B, C_{in}, T)` for ``dims=1``).
            t: Times :math:`()` or :math:`(B,)` in [0, 1].
            label: Class labels :math:`(B,)` (long); negative entries and ``None`` mean the
                null class.
            context: Context tokens :math:`(B, T, D)`; the class tokens by default.
        """
        if self.encoder_only:
            raise TypeError("an encoder-only UNet has no output map: call encode()")
        h, skips, emb, context = self.encode(x, t, label, context)
        for k, stages in enumerate(self.up):
            for stage in stages:
                h = stage(torch.cat([h, skips.pop()], dim=1), emb, context)
            if k < self.levels - 1:
                h = nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsample[k](h)
        return self.head(h)
