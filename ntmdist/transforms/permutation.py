r"""Fixed permutations of the last dimension (volume preserving, :math:`\log |\det J| = 0`)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Bijector, LazyBijector, _check

__all__ = ["Permutation"]


class _Permute(Bijector):
    def __init__(self, perm: Tensor) -> None:
        super().__init__(event_dim=1)
        self.perm = perm
        self.inv_perm = torch.argsort(perm)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check(x, len(self.perm))
        return x[..., self.perm], x.new_zeros(x.shape[:-1])

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        _check(y, len(self.perm))
        return y[..., self.inv_perm], y.new_zeros(y.shape[:-1])


class Permutation(LazyBijector):
    r""":math:`y_i = x_{\pi(i)}`; the context is ignored. The reversal by default.

    Example:
        >>> Permutation(3)()(torch.tensor([1.0, 2.0, 3.0]))
        tensor([3., 2., 1.])
    """

    def __init__(self, features: int, perm: Tensor | list[int] | None = None) -> None:
        super().__init__()
        perm = torch.arange(features - 1, -1, -1) if perm is None else torch.as_tensor(perm)
        if sorted(perm.tolist()) != list(range(features)):
            raise ValueError(f"perm must be a permutation of range({features})")
        self.register_buffer("perm", perm.long())

    def forward(self, c: Tensor | None = None) -> Bijector:
        return _Permute(self.perm)
