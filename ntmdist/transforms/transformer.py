r"""TarFlow-style causal-transformer affine bijector over a sequence of tokens.

For tokens :math:`x_1, \dots, x_L` (in raster order, or reversed),

.. math:: z_i = (x_i - \mu_i(x_{<i}, c)) \, e^{-a_i(x_{<i}, c)}, \qquad
          \log |\det J| = -\sum_i a_i ,

where :math:`(\mu_i, a_i)` come from a causal transformer reading the tokens shifted by one.
The forward (data -> noise) direction is one parallel pass; the inverse is sequential over tokens
and reuses a key/value cache, so it costs one token per layer per step.

References:
    | Normalizing Flows are Capable Generative Models (Zhai et al., 2024), arXiv 2412.06329
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nets import soft_clip
from .base import Bijector, LazyBijector

__all__ = ["CausalTransformerAffine"]


class _Layer(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def _split(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=-1)
        return tuple(a.unflatten(-1, (self.heads, -1)).transpose(-2, -3) for a in (q, k, v))

    def forward(self, h: Tensor, cache: list[Tensor] | None = None) -> Tensor:
        """Causal pass over ``(N, L, W)``; with ``cache`` (a list ``[K, V]`` updated in place),
        ``h`` holds only the next token(s) and attends to everything cached."""
        q, k, v = self._split(h)
        if cache is None:
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            if cache:
                k, v = torch.cat([cache[0], k], dim=-2), torch.cat([cache[1], v], dim=-2)
            cache[:] = [k, v]
            att = F.scaled_dot_product_attention(q, k, v)
        h = h + self.proj(att.transpose(-2, -3).flatten(-2))
        return h + self.mlp(self.norm2(h))


class _CausalAffine(Bijector):
    def __init__(self, block: CausalTransformerAffine, c: Tensor | None) -> None:
        super().__init__(event_dim=2)
        self.block, self.c = block, c

    def _prepare(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        b = self.block
        if x.shape[-2:] != (b.tokens, b.channels):
            raise ValueError(
                f"expected inputs of shape (*, {b.tokens}, {b.channels}), got {tuple(x.shape)}"
            )
        batch = x.shape[:-2]
        if self.c is not None:
            batch = torch.broadcast_shapes(batch, self.c.shape[:-1])
        return x.expand(*batch, -1, -1).reshape(-1, b.tokens, b.channels), batch

    def _context(self, n: int, like: Tensor) -> Tensor:
        b = self.block
        if self.c is None:
            return like.new_zeros(n, 1, b.width)
        c = self.c.expand(*self._batch, -1).reshape(n, -1)
        return b.context_proj(c)[:, None]

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b = self.block
        flat, self._batch = self._prepare(x)
        seq = flat.flip(1) if b.reverse else flat
        mu, a = b.params(seq, self._context(flat.shape[0], flat))
        z = (seq - mu) * (-a).exp()
        z = z.flip(1) if b.reverse else z
        return z.reshape(*self._batch, b.tokens, b.channels), -a.flatten(1).sum(-1).reshape(
            self._batch
        )

    def _backward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        b = self.block
        flat, self._batch = self._prepare(z)
        seq = flat.flip(1) if b.reverse else flat
        n = seq.shape[0]
        ctx = self._context(n, seq)
        caches: list[list[Tensor]] = [[] for _ in b.layers]
        xs, ladj = [], seq.new_zeros(n)
        prev = None
        for i in range(b.tokens):
            h = b.start.to(seq).expand(n, 1, -1) if prev is None else b.embed(prev)
            h = h + b.pos[i : i + 1].to(seq) + ctx
            for layer, cache in zip(b.layers, caches, strict=True):
                h = layer(h, cache)
            mu, a = b.head(h)
            x_i = seq[:, i : i + 1] * a.exp() + mu
            xs.append(x_i)
            ladj = ladj - a.flatten(1).sum(-1)
            prev = x_i
        x = torch.cat(xs, dim=1)
        x = x.flip(1) if b.reverse else x
        return x.reshape(*self._batch, b.tokens, b.channels), ladj.reshape(self._batch)


class CausalTransformerAffine(LazyBijector):
    r"""Lazy TarFlow block on token sequences ``(*, L, C)`` with context ``(*, E)``.

    Arguments:
        tokens: Sequence length :math:`L`.
        channels: Features per token :math:`C`.
        context: Context features :math:`E` (0 for none), added to every token.
        width: Transformer width.
        depth: Number of causal layers.
        heads: Attention heads.
        reverse: Read tokens in reverse raster order (alternate between blocks).
        scale_bound: Soft bound on the log-scale :math:`a`.

    Example:
        >>> f = CausalTransformerAffine(6, 2, context=4, width=16, depth=1)(torch.randn(4))
        >>> x = torch.randn(3, 6, 2)
        >>> torch.equal(f(x), x)  # zero-initialised output projection: identity
        True
    """

    def __init__(
        self, tokens: int, channels: int, context: int = 0, width: int = 128, depth: int = 2,
        heads: int = 4, reverse: bool = False, scale_bound: float = 3.0,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.tokens, self.channels, self.context, self.width = tokens, channels, context, width
        self.reverse, self.scale_bound = reverse, scale_bound
        self.embed = nn.Linear(channels, width)
        self.start = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(tokens, width) * 0.02)
        self.context_proj = nn.Linear(context, width) if context else None
        self.layers = nn.ModuleList(_Layer(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, 2 * channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def head(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, a)`` from transformer outputs."""
        mu, a = self.out(self.norm(h)).chunk(2, dim=-1)
        return mu, soft_clip(a, self.scale_bound)

    def params(self, seq: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """Parallel ``(mu, a)`` for all tokens of ``seq`` ``(N, L, C)`` (teacher forcing)."""
        h = self.embed(seq[:, :-1])
        h = torch.cat([self.start.to(seq).expand(seq.shape[0], 1, -1), h], dim=1)
        h = h + self.pos.to(seq) + ctx
        for layer in self.layers:
            h = layer(h)
        return self.head(h)

    def forward(self, c: Tensor | None = None) -> Bijector:
        if self.context and c is None:
            raise ValueError(f"this block expects a context of {self.context} features")
        return _CausalAffine(self, c)
