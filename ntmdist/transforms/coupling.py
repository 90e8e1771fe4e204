r"""Affine coupling bijector.

With a binary mask splitting :math:`x = (x_a, x_b)`:

.. math:: y_a = x_a, \qquad y_b = x_b e^{a(x_a, c)} + b(x_a, c), \qquad
          \log |\det J| = \sum a(x_a, c) .

Both directions take one network pass.

References:
    | Density estimation using Real NVP (Dinh et al., 2016), arXiv 1605.08803
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nets import soft_clip
from .base import Bijector, LazyBijector, _check

__all__ = ["AffineCoupling"]


class _Coupling(Bijector):
    def __init__(self, block: AffineCoupling, c: Tensor | None) -> None:
        super().__init__(event_dim=1)
        self.block, self.c = block, c

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        keep = self.block.mask.to(x.dtype)
        h = x * keep
        if self.c is not None:
            batch = torch.broadcast_shapes(h.shape[:-1], self.c.shape[:-1])
            h = torch.cat([h.expand(*batch, -1), self.c.expand(*batch, -1)], dim=-1)
        shift, a = self.block.net(h).chunk(2, dim=-1)
        a = soft_clip(a, self.block.scale_bound) * (1 - keep)
        return shift * (1 - keep), a

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check(x, self.block.features)
        shift, a = self._params(x)
        return x * a.exp() + shift, a.sum(-1)

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        _check(y, self.block.features)
        shift, a = self._params(y)
        return (y - shift) * (-a).exp(), a.sum(-1)


class AffineCoupling(LazyBijector):
    r"""Lazy affine coupling on ``(*, D)`` with context ``(*, C)``.

    Arguments:
        features: :math:`D`.
        context: :math:`C` (0 for none).
        mask: Boolean ``(D,)``, ``True`` for the kept features (:math:`x_a`); alternating by
            default.
        hidden: Hidden widths of the conditioner.
        scale_bound: Soft bound on the log-scale.

    Example:
        >>> f = AffineCoupling(4, context=1)(torch.zeros(1))
        >>> x = torch.randn(2, 4)
        >>> torch.equal(f(x), x)  # zero-initialised: identity
        True
    """

    def __init__(
        self, features: int, context: int = 0, mask: Tensor | None = None,
        hidden: tuple[int, ...] = (128, 128), scale_bound: float = 3.0,
    ) -> None:
        super().__init__()
        if mask is None:
            mask = torch.arange(features) % 2 == 0
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (features,):
            raise ValueError(f"mask must have shape ({features},), got {tuple(mask.shape)}")
        self.features, self.context, self.scale_bound = features, context, scale_bound
        self.register_buffer("mask", mask)
        layers: list[nn.Module] = []
        width = features + context
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        last = nn.Linear(width, 2 * features)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, c: Tensor | None = None) -> Bijector:
        if self.context and c is None:
            raise ValueError(f"this block expects a context of {self.context} features")
        return _Coupling(self, c)
