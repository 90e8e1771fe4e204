r"""TarFlow blocks on images: a causal-transformer affine bijector over non-overlapping patches.

An image :math:`x \in \mathbb{R}^{C \times H \times W}` is cut into :math:`L = HW/p^2` patches
of :math:`p \times p` pixels, read in raster order, each a token of :math:`C p^2` features.
Patchifying is a permutation of coordinates (log-determinant 0), so the block's log-determinant
is that of the :class:`~ntmdist.transforms.CausalTransformerAffine` on the tokens,
:math:`-\sum_i a_i`.

References:
    | Normalizing Flows are Capable Generative Models (Zhai et al., 2024), arXiv 2412.06329
    | An Image is Worth 16x16 Words (Dosovitskiy et al., 2020), arXiv 2010.11929 (patches)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Bijector, LazyBijector
from .transformer import CausalTransformerAffine

__all__ = ["PatchCausalAffine", "patch_grid", "patchify", "unpatchify"]


def patch_grid(image_shape: Sequence[int], patch: int) -> tuple[int, int, int]:
    """``(C, H, W)`` of ``image_shape``, checked to be cut into ``patch`` x ``patch`` patches.

    Raises:
        ValueError: Not three dimensions, or ``patch`` does not divide the height and width.

    Example:
        >>> patch_grid((1, 8, 8), 2)
        (1, 8, 8)
    """
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
    c, h, w = (int(v) for v in image_shape)
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch ({patch}) must divide the height ({h}) and width ({w})")
    return c, h, w


def patchify(x: Tensor, patch: int) -> Tensor:
    """``(*, C, H, W) -> (*, L, C p^2)``: non-overlapping ``p x p`` patches in raster order."""
    *batch, c, h, w = x.shape
    x = x.reshape(*batch, c, h // patch, patch, w // patch, patch)
    n = len(batch)
    x = x.permute(*range(n), n + 1, n + 3, n, n + 2, n + 4)
    return x.reshape(*batch, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(tokens: Tensor, shape: Sequence[int], patch: int) -> Tensor:
    """Inverse of :func:`patchify` for images of ``shape = (C, H, W)``."""
    c, h, w = shape
    *batch, _, _ = tokens.shape
    n = len(batch)
    x = tokens.reshape(*batch, h // patch, w // patch, c, patch, patch)
    x = x.permute(*range(n), n + 2, n, n + 3, n + 1, n + 4)
    return x.reshape(*batch, c, h, w)


class _Patched(Bijector):
    def __init__(self, block: PatchCausalAffine, inner: Bijector) -> None:
        super().__init__(event_dim=3)
        self.block, self.inner = block, inner

    def _check(self, x: Tensor) -> None:
        if x.shape[-3:] != self.block.image_shape:
            shape = ", ".join(map(str, self.block.image_shape))
            raise ValueError(f"expected images of shape (*, {shape}), got {tuple(x.shape)}")

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        z, ladj = self.inner.call_and_ladj(patchify(x, self.block.patch))
        return unpatchify(z, self.block.image_shape, self.block.patch), ladj

    def _backward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self._check(z)
        x, ladj = self.inner.inverse_and_ladj(patchify(z, self.block.patch))
        return unpatchify(x, self.block.image_shape, self.block.patch), ladj


class PatchCausalAffine(LazyBijector):
    r"""Lazy TarFlow block on images ``(*, C, H, W)`` with context ``(*, E)``.

    Arguments:
        image_shape: :math:`(C, H, W)`, with :math:`H` and :math:`W` divisible by ``patch``.
        patch: Patch size :math:`p`.
        context, width, depth, heads, reverse, scale_bound: As for
            :class:`~ntmdist.transforms.CausalTransformerAffine` (``reverse``: reverse raster
            order; alternate it between blocks).

    Example:
        >>> f = PatchCausalAffine((1, 4, 4), patch=2, context=4, width=16, depth=1)
        >>> x = torch.randn(3, 1, 4, 4)
        >>> bij = f(torch.randn(4))
        >>> torch.equal(bij(x), x)  # zero-initialised output projection: identity
        True
    """

    def __init__(
        self, image_shape: Sequence[int], patch: int = 2, context: int = 0, width: int = 128,
        depth: int = 2, heads: int = 4, reverse: bool = False, scale_bound: float = 3.0,
    ) -> None:
        super().__init__()
        c, h, w = patch_grid(image_shape, patch)
        self.image_shape, self.patch = torch.Size((c, h, w)), patch
        self.tokens = CausalTransformerAffine(
            (h // patch) * (w // patch), c * patch * patch, context, width, depth, heads,
            reverse, scale_bound,
        )

    def forward(self, c: Tensor | None = None) -> Bijector:
        return _Patched(self, self.tokens(c))
