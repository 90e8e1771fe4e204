r"""Masked autoregressive bijectors (MAF / NSF) with affine or spline univariate maps.

Feature :math:`i` is transformed by a univariate monotonic map whose parameters depend on the
features before it in ``order`` and on the context :math:`c`:

.. math:: y_i = g(x_i; \phi_i(x_{<i}, c)), \qquad
          \log |\det J| = \sum_i \log g'(x_i; \phi_i) .

The forward (data -> noise) direction is one network pass; the inverse takes :math:`D` passes,
or :math:`G` with ``passes=G``: the features are then cut into :math:`G` groups in ``order`` and
each group depends on the groups before it (zuko's ``passes``; :math:`G = 2` is a coupling layer,
Dinh et al., 2017). Inverse pass :math:`g` computes group :math:`g`'s parameters only (the output
layer's other rows are skipped) and inverts that group's univariate maps, so the element-wise
work of an inverse is that of one forward. All-zero network outputs give the identity, so a
zero-initialised block starts as the identity.

References:
    | Masked Autoregressive Flow for Density Estimation (Papamakarios et al., 2017),
      arXiv 1705.07057
    | Neural Spline Flows (Durkan et al., 2019), arXiv 1906.04032
    | Density estimation using Real NVP (Dinh et al., 2017), arXiv 1605.08803
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..nets import MaskedMLP, soft_clip
from .base import Bijector, LazyBijector, _check
from .spline import rqs_forward, rqs_inverse

__all__ = ["MaskedAutoregressive", "affine_forward", "affine_inverse"]

Univariate = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def affine_forward(x: Tensor, phi: Tensor, bound: float = 3.0) -> tuple[Tensor, Tensor]:
    r""":math:`y = x e^{a} + b`, :math:`a` soft-clipped to :math:`(-B, B)`; ``phi = (b, a)``."""
    a = soft_clip(phi[..., 1], bound)
    return x * a.exp() + phi[..., 0], a


def affine_inverse(y: Tensor, phi: Tensor, bound: float = 3.0) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`affine_forward` and the forward log-derivative."""
    a = soft_clip(phi[..., 1], bound)
    return (y - phi[..., 0]) * (-a).exp(), a


class _Autoregressive(Bijector):
    def __init__(self, block: MaskedAutoregressive, c: Tensor | None) -> None:
        super().__init__(event_dim=1)
        self.block, self.c = block, c

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check(x, self.block.features)
        y, ladj = self.block.univariate(x, self.block.hyper(x, self.c), inverse=False)
        return y, ladj.sum(-1)

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._invert(y, ladj=True)

    def _backward_only(self, y: Tensor) -> Tensor:
        return self._invert(y, ladj=False)[0]

    def _invert(self, y: Tensor, ladj: bool) -> tuple[Tensor, Tensor]:
        _check(y, self.block.features)
        # group g's parameters depend only on the groups before it: pass g computes them (and
        # only them) from the features found so far and inverts that group's univariate maps
        hyper = self.block.hyper
        layers = hyper.masked_layers()
        if self.c is not None:  # a batch of contexts broadcasts against y's batch
            y = y.expand(*torch.broadcast_shapes(y.shape[:-1], self.c.shape[:-1]), -1)
        x, total = torch.zeros_like(y), y.new_zeros(())
        for g in range(hyper.passes):
            features = hyper.group_features(g)
            phi = hyper(x, self.c, group=g, layers=layers)
            xg, lg = self.block.univariate(y.index_select(-1, features), phi, inverse=True,
                                           ladj=ladj)
            x = x.index_copy(-1, features, xg)
            total = total + lg.sum(-1) if ladj else total
        return x, total


class MaskedAutoregressive(LazyBijector):
    r"""Lazy masked autoregressive bijector on ``(*, D)`` with context ``(*, C)``.

    Arguments:
        features: :math:`D`.
        context: :math:`C` (0 for none).
        univariate: ``"affine"`` or ``"spline"`` (monotonic rational-quadratic).
        bins: Spline bins :math:`K`.
        bound: Spline domain :math:`[-B, B]` (identity outside).
        order: Autoregressive order, a permutation of ``range(D)``.
        hidden: Hidden widths of the MADE hyper-network.
        zero_init: Zero-initialise the output layer so the block starts as the identity.
        passes: Groups :math:`G` of features, inverted one group per network pass (default
            :math:`D`, fully autoregressive).

    Example:
        >>> block = MaskedAutoregressive(3, context=2, univariate="spline")
        >>> f = block(torch.randn(2))
        >>> x = torch.randn(5, 3)
        >>> y, ladj = f.call_and_ladj(x)
        >>> torch.allclose(f.inv(y), x, atol=1e-5), ladj.shape
        (True, torch.Size([5]))
    """

    def __init__(
        self, features: int, context: int = 0, univariate: str = "spline", bins: int = 8,
        bound: float = 5.0, order: Tensor | list[int] | None = None,
        hidden: tuple[int, ...] = (128, 128), zero_init: bool = True, passes: int | None = None,
    ) -> None:
        super().__init__()
        if univariate not in ("affine", "spline"):
            raise ValueError(f"univariate must be 'affine' or 'spline', got {univariate!r}")
        self.features, self.context = features, context
        self.kind, self.bins, self.bound = univariate, bins, bound
        params = 2 if univariate == "affine" else 3 * bins - 1
        self.hyper = MaskedMLP(features, context, params, order, hidden, zero_init, passes)

    def extra_repr(self) -> str:
        return (f"features={self.features}, context={self.context}, univariate={self.kind!r}, "
                f"passes={self.hyper.passes}")

    def univariate(
        self, v: Tensor, phi: Tensor, inverse: bool, ladj: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Apply the univariate map (or its inverse) with parameters ``phi`` ``(*, D, P)``; an
        inverse without ``ladj`` may return ``None`` for it."""
        if self.kind == "affine":
            return (affine_inverse if inverse else affine_forward)(v, phi)
        k = self.bins
        w, h, d = phi[..., :k], phi[..., k : 2 * k], phi[..., 2 * k :]
        if inverse:
            return rqs_inverse(v, w, h, d, self.bound, ladj)
        return rqs_forward(v, w, h, d, self.bound)

    def forward(self, c: Tensor | None = None) -> Bijector:
        if self.context and c is None:
            raise ValueError(f"this block expects a context of {self.context} features")
        return _Autoregressive(self, c)
