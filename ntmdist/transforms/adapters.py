r"""Adapters that let foreign bijectors serve as ntmdist blocks.

- A zuko ``LazyTransform`` (``module(c) -> Transform``, data -> noise) is called with its context
  at every use; the returned ``Transform`` is never stored.
- A context-conditioned nflows ``Transform`` (``forward(x, context) -> (y, logabsdet)``, data ->
  noise) is wrapped into a torch ``Transform``; the context is broadcast to the batch of ``x``.

Neither adapter imports zuko or nflows: zuko changes global torch state on import, and ntmdist
never does, so the user's own import is the only one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Transform

from .base import Bijector, LazyBijector, call_and_ladj, inverse_and_ladj

__all__ = ["NflowsBlock", "ZukoBlock", "as_lazy"]


class _Wrapped(Bijector):
    def __init__(self, transform: Transform, batch: torch.Size, event_dim: int) -> None:
        super().__init__(event_dim)
        self.transform, self.batch = transform, batch

    def _expand(self, v: Tensor) -> Tensor:
        """``v`` broadcast to the context's batch (zuko transforms do not broadcast ``v``)."""
        event = v.shape[v.dim() - self.event_dim :]
        return v.expand(*torch.broadcast_shapes(v.shape[: v.dim() - self.event_dim], self.batch),
                        *event)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return call_and_ladj(self.transform, self._expand(x), self.event_dim)

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return inverse_and_ladj(self.transform, self._expand(y), self.event_dim)


class ZukoBlock(LazyBijector):
    """A zuko ``LazyTransform`` (or any ``module(c) -> Transform``) as an ntmdist block.

    Example:
        >>> import zuko
        >>> block = ZukoBlock(zuko.flows.MaskedAutoregressiveTransform(2, context=3))
        >>> block(torch.randn(3)).call_and_ladj(torch.randn(5, 2))[1].shape
        torch.Size([5])
    """

    def __init__(self, lazy: nn.Module, event_dim: int = 1) -> None:
        super().__init__()
        self.lazy, self.event_dim = lazy, event_dim

    def forward(self, c: Tensor | None = None) -> Bijector:
        batch = torch.Size() if c is None else c.shape[:-1]
        return _Wrapped(self.lazy(c), batch, self.event_dim)


class _Nflows(Bijector):
    def __init__(self, transform: nn.Module, c: Tensor | None, event_dim: int) -> None:
        super().__init__(event_dim)
        self.transform, self.c = transform, c

    def _run(self, v: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        batch = v.shape[: v.dim() - self.event_dim]
        if self.c is not None:
            batch = torch.broadcast_shapes(batch, self.c.shape[:-1])
        event = v.shape[v.dim() - self.event_dim :]
        flat = v.expand(*batch, *event).reshape(-1, *event)
        ctx = None if self.c is None else self.c.expand(*batch, -1).reshape(flat.shape[0], -1)
        fn = self.transform.inverse if inverse else self.transform
        out, logdet = fn(flat, context=ctx)
        sign = -1.0 if inverse else 1.0
        return out.reshape(*batch, *event), sign * logdet.reshape(batch)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(x, inverse=False)

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(y, inverse=True)


class NflowsBlock(LazyBijector):
    """A context-conditioned nflows ``Transform`` as an ntmdist block.

    Example:
        >>> from nflows.transforms import MaskedAffineAutoregressiveTransform
        >>> block = NflowsBlock(MaskedAffineAutoregressiveTransform(2, 8, context_features=3))
        >>> block(torch.randn(3)).call_and_ladj(torch.randn(5, 2))[1].shape
        torch.Size([5])
    """

    def __init__(self, transform: nn.Module, event_dim: int = 1) -> None:
        super().__init__()
        self.transform, self.event_dim = transform, event_dim

    def forward(self, c: Tensor | None = None) -> Bijector:
        return _Nflows(self.transform, c, self.event_dim)


def as_lazy(block: nn.Module, event_dim: int = 1) -> LazyBijector:
    """Return ``block`` as an ntmdist lazy bijector (zuko and nflows blocks are wrapped)."""
    if isinstance(block, LazyBijector):
        return block
    if not isinstance(block, nn.Module):
        raise TypeError(f"a transporter block must be an nn.Module, got {type(block).__name__}")
    module = type(block).__module__
    if module.startswith("nflows."):
        return NflowsBlock(block, event_dim)
    return ZukoBlock(block, event_dim)
