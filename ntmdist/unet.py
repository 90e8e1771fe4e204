r"""A small U-Net for images, conditioned by FiLM on a vector (time and condition embeddings)
and, optionally, by cross-attention on condition tokens: the backbone of the default image
predictor (:class:`~ntmdist.predictor.ImagePredictor`) and velocity
(:class:`~ntmdist.flow_matching.Velocity`).

References:
    | U-Net: Convolutional Networks for Biomedical Image Segmentation (Ronneberger et al.,
      2015), arXiv 1505.04597
    | FiLM: Visual Reasoning with a General Conditioning Layer (Perez et al., 2017),
      arXiv 1709.07871
    | Denoising Diffusion Probabilistic Models (Ho et al., 2020), arXiv 2006.11239 (the U-Net)
    | Attention Is All You Need (Vaswani et al., 2017), arXiv 1706.03762 (cross-attention)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["UNet"]


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class _ResBlock(nn.Module):
    """Pre-norm residual conv block with FiLM conditioning on a context vector."""

    def __init__(self, cin: int, cout: int, context: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(_groups(cin), cin), nn.GroupNorm(_groups(cout), cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.film = nn.Linear(context, 2 * cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.film(c)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(nn.functional.silu(h))


class _CrossAttention(nn.Module):
    """Residual cross-attention of the pixels of ``h`` ``(N, C, H, W)`` to ``tokens``
    ``(N, L, E)`` (``mask`` ``(N, L)``, True for a real token), zero-initialised output."""

    def __init__(self, channels: int, tokens: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        heads = next(h for h in (4, 2, 1) if channels % h == 0)
        self.attn = nn.MultiheadAttention(channels, heads, kdim=tokens, vdim=tokens,
                                          batch_first=True)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, h: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        q = self.norm(h).flatten(2).transpose(1, 2)
        out = self.attn(q, tokens, tokens, key_padding_mask=~mask, need_weights=False)[0]
        return h + out.transpose(1, 2).reshape(h.shape)


class UNet(nn.Module):
    r"""Small U-Net ``(x, c) -> out`` for images ``(N, C, H, W)`` and a context ``c`` ``(N, E)``
    (time and condition embeddings), conditioning every residual block by FiLM.

    One residual block per resolution on the way down and up, channel multipliers ``mults``
    (a resolution is halved between levels while ``H`` and ``W`` stay even), skip connections
    by concatenation, and a zero-initialised output convolution (the network starts at 0).
    With ``tokens`` :math:`E_t > 0`, the lowest resolution also attends to condition tokens
    ``(N, L, E_t)`` (``forward(x, c, tokens, mask)``; residual cross-attention, zero-initialised
    output projection).

    Arguments:
        channels: Input channels :math:`C`.
        out_channels: Output channels.
        context: Context features :math:`E`.
        width: Channels at full resolution.
        mults: Channel multipliers per resolution.
        tokens: Features :math:`E_t` of condition tokens (0: none).

    Example:
        >>> net = UNet(1, 2, context=8, width=16)
        >>> net(torch.randn(3, 1, 8, 8), torch.randn(3, 8)).shape
        torch.Size([3, 2, 8, 8])
    """

    def __init__(
        self, channels: int, out_channels: int, context: int, width: int = 64,
        mults: tuple[int, ...] = (1, 2), tokens: int = 0,
    ) -> None:
        super().__init__()
        widths = [width * m for m in mults]
        self.inp = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        prev = widths[0]
        for w in widths:
            self.down.append(_ResBlock(prev, w, context))
            prev = w
        self.mid = _ResBlock(prev, prev, context)
        self.cross = _CrossAttention(prev, tokens) if tokens else None
        self.up = nn.ModuleList()
        for w in reversed(widths):
            self.up.append(_ResBlock(prev + w, w, context))
            prev = w
        self.norm = nn.GroupNorm(_groups(prev), prev)
        self.out = nn.Conv2d(prev, out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c: Tensor, tokens: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        h = self.inp(x)
        skips = []
        for i, block in enumerate(self.down):
            if i and h.shape[-1] % 2 == 0 and h.shape[-2] % 2 == 0:
                h = nn.functional.avg_pool2d(h, 2)
            h = block(h, c)
            skips.append(h)
        h = self.mid(h, c)
        if self.cross is not None:
            if tokens is None:
                raise ValueError("this U-Net attends to condition tokens: pass tokens and mask")
            h = self.cross(h, tokens, mask)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = nn.functional.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), c)
        return self.out(nn.functional.silu(self.norm(h)))
