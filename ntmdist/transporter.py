r"""The transporter :math:`u_t = f(x_t, t)`: a level-time conditioned invertible map (data -> u).

A stack of lazy bijector blocks, each called with the sinusoidal embedding of the level time
:math:`t` as its context. It is the identity at :math:`t = 1` (the top level is pure noise) and,
with zero-initialised blocks, the identity everywhere at the start of training.

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch
from torch import Tensor, nn

from .nets import TimeEmbedding
from .transforms import ComposedBijector, MaskedAutoregressive, PatchCausalAffine, as_lazy
from .transforms.base import Bijector, call_and_ladj, inverse, inverse_and_ladj

__all__ = ["Transporter"]


class _AtTime(Bijector):
    r""":math:`f(\cdot, t)`, forced to the identity where :math:`t = 1`."""

    def __init__(self, inner: Bijector, top: Tensor, event_dim: int) -> None:
        super().__init__(event_dim)
        self.inner, self.top = inner, top

    def _pass_through(self, v: Tensor, out: Tensor) -> Tensor:
        """``v`` where :math:`t = 1`, ``out`` elsewhere."""
        return torch.where(self.top.reshape(*self.top.shape, *(1,) * self.event_dim), v, out)

    def _gate(self, v: Tensor, out: Tensor, ladj: Tensor) -> tuple[Tensor, Tensor]:
        return self._pass_through(v, out), torch.where(self.top, 0.0, ladj)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._gate(x, *call_and_ladj(self.inner, x, self.event_dim))

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._gate(y, *inverse_and_ladj(self.inner, y, self.event_dim))

    def _backward_only(self, y: Tensor) -> Tensor:
        return self._pass_through(y, inverse(self.inner, y))


class Transporter(nn.Module):
    r"""Level-time conditioned transporter :math:`f(x, t)`.

    Arguments:
        blocks: Lazy bijectors (ntmdist, zuko ``LazyTransform`` or nflows ``Transform``), each
            accepting a context of ``embedding`` features. No blocks: the identity (Gaussian
            steps).
        embedding: Size of the sinusoidal time embedding passed as context.
        event_dim: Event dimensions the blocks act on.

    Calling ``transporter(t)`` with times ``t`` of shape ``(*,)`` returns the
    ``torch.distributions.Transform`` :math:`x \mapsto f(x, t)` for inputs ``(*, *event)``.

    Example:
        >>> f = Transporter.default(2)
        >>> x = torch.randn(5, 2)
        >>> u, ladj = f(torch.full((5,), 0.5)).call_and_ladj(x)
        >>> torch.allclose(u, x, atol=1e-5), ladj.abs().max().item() < 1e-5  # zero-init: identity
        (True, True)
    """

    def __init__(
        self, blocks: Sequence[nn.Module] = (), embedding: int = 32, event_dim: int = 1
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(as_lazy(b, event_dim) for b in blocks)
        self.embedding = TimeEmbedding(embedding)
        self.event_dim = event_dim

    @classmethod
    def default(
        cls, features: int, blocks: int = 2, univariate: str = "spline", embedding: int = 32,
        hidden: tuple[int, ...] = (128, 128), bins: int = 8, bound: float = 5.0,
        passes: int | None = None,
    ) -> Transporter:
        """Masked autoregressive blocks with alternating order (DESIGN section 5, vectors);
        ``passes`` groups the features (see :class:`~ntmdist.transforms.MaskedAutoregressive`)."""
        order = torch.arange(features)
        made = [
            MaskedAutoregressive(
                features, embedding, univariate, bins=bins, bound=bound, hidden=hidden,
                order=order if i % 2 == 0 else order.flip(0), passes=passes,
            )
            for i in range(blocks)
        ]
        return cls(made, embedding=embedding)

    @classmethod
    def default_image(
        cls, image_shape: Sequence[int], blocks: int = 2, patch: int | None = None,
        embedding: int = 32, width: int = 128, depth: int = 2, heads: int = 4,
    ) -> Transporter:
        """TarFlow blocks over patches with alternating raster order, for images ``(C, H, W)``.

        The patch size defaults to the largest of 4 and 2 that divides the height and the
        width and leaves at least 16 tokens, and to 1 (one token per pixel) when neither
        does, so every image shape gets a transporter; an explicit ``patch`` must divide
        the height and the width.

        Example:
            >>> f = Transporter.default_image((1, 8, 8), width=16, depth=1)
            >>> f.blocks[0].patch, f(torch.full((2,), 0.5))(torch.randn(2, 1, 8, 8)).shape
            (2, torch.Size([2, 1, 8, 8]))
            >>> Transporter.default_image((1, 3, 4), width=16, depth=1).blocks[0].patch
            1
        """
        shape = tuple(image_shape)
        if len(shape) != 3 or not all(isinstance(v, Integral) and v >= 1 for v in shape):
            raise ValueError(f"image_shape must be (C, H, W) of positive integers, got {shape}")
        c, h, w = (int(v) for v in shape)
        if patch is None:
            patch = next((p for p in (4, 2)
                          if h % p == 0 and w % p == 0 and (h // p) * (w // p) >= 16), 1)
        made = [
            PatchCausalAffine((c, h, w), patch, embedding, width, depth, heads,
                              reverse=i % 2 == 1)
            for i in range(blocks)
        ]
        return cls(made, embedding=embedding, event_dim=3)

    @property
    def is_identity(self) -> bool:
        """Whether the transporter has no blocks (Gaussian reverse steps)."""
        return len(self.blocks) == 0

    def forward(self, t: Tensor) -> Bijector:
        c = self.embedding(t)
        inner = ComposedBijector([b(c) for b in self.blocks], self.event_dim)
        return _AtTime(inner, t >= 1, self.event_dim)
