r"""Base classes for ntmdist bijectors.

A *bijector* is a :class:`torch.distributions.Transform` that also computes its log absolute
Jacobian determinant (``ladj``) in the same pass, in both directions:

.. math:: (y, \log |\det \partial y / \partial x|) = f(x), \qquad
          (x, \log |\det \partial y / \partial x|) = f^{-1}(y) .

A *lazy bijector* is an :class:`torch.nn.Module` whose ``forward(c)`` returns a bijector for the
context ``c`` (as in zuko). Directions: the forward direction maps data to noise (``x -> u``), like
zuko and nflows; ``TransformedDistribution`` uses ``.inv``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Transform, constraints
from torch.distributions.transforms import _InverseTransform

__all__ = [
    "Bijector",
    "ComposedBijector",
    "LazyBijector",
    "LazyComposed",
    "call_and_ladj",
    "inverse",
    "inverse_and_ladj",
]


def _sum_rightmost(x: Tensor, n: int) -> Tensor:
    return x.flatten(-n).sum(-1) if n > 0 else x


class Bijector(Transform):
    r"""A transform with fused ``ladj`` in both directions over ``event_dim`` dimensions.

    Subclasses implement :meth:`_forward` and :meth:`_backward`, each returning the output and the
    log-determinant of the **forward** map (shape: the input shape without its event dims).
    """

    bijective = True
    sign = +1

    def __init__(self, event_dim: int = 1) -> None:
        super().__init__(cache_size=0)
        self._ndims = event_dim
        self._last: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.real, self._ndims)

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.real, self._ndims)

    @abc.abstractmethod
    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, ladj)`` with ``y = f(x)``."""

    @abc.abstractmethod
    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, ladj)``: ``x = f^{-1}(y)`` and the forward log-determinant at ``x``."""

    def _backward_only(self, y: Tensor) -> Tensor:
        """``f^{-1}(y)`` without the log-determinant (samplers; subclasses that can skip its
        work override this)."""
        return self._backward(y)[0]

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, ladj = self._forward(x)
        self._last = (x, y, ladj)
        return y, ladj

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, ladj)``: the inverse and the log-determinant of the **forward** map at ``x``."""
        x, ladj = self._backward(y)
        self._last = (x, y, ladj)
        return x, ladj

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self.inverse_and_ladj(y)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        last = self._last
        if last is not None and last[0] is x and last[1] is y:
            return last[2]
        return self.call_and_ladj(x)[1]


def call_and_ladj(transform: Transform, x: Tensor, event_dim: int) -> tuple[Tensor, Tensor]:
    """``(y, ladj)`` of any torch ``Transform``, ``ladj`` summed over ``event_dim`` dimensions."""
    if isinstance(transform, Bijector):
        y, ladj = transform.call_and_ladj(x)
        return y, _sum_rightmost(ladj, event_dim - transform.event_dim)
    if isinstance(transform, _InverseTransform):
        y, ladj = inverse_and_ladj(transform._inv, x, event_dim)
        return y, -ladj
    if hasattr(transform, "call_and_ladj"):  # zuko's fused pass (one network evaluation)
        y, ladj = transform.call_and_ladj(x)
    else:
        y = transform(x)
        ladj = transform.log_abs_det_jacobian(x, y)
    return y, _sum_rightmost(ladj, ladj.dim() - (y.dim() - event_dim))


def inverse_and_ladj(transform: Transform, y: Tensor, event_dim: int) -> tuple[Tensor, Tensor]:
    """``(x, ladj)``: inverse of any torch ``Transform`` and its **forward** ``ladj`` at ``x``."""
    if isinstance(transform, Bijector):
        x, ladj = transform.inverse_and_ladj(y)
        return x, _sum_rightmost(ladj, event_dim - transform.event_dim)
    if isinstance(transform, _InverseTransform):
        x, ladj = call_and_ladj(transform._inv, y, event_dim)
        return x, -ladj
    x = transform.inv(y)
    ladj = transform.log_abs_det_jacobian(x, y)
    return x, _sum_rightmost(ladj, ladj.dim() - (y.dim() - event_dim))


def inverse(transform: Transform, y: Tensor) -> Tensor:
    """``f^{-1}(y)`` of any torch ``Transform``; an ntmdist bijector skips the log-determinant
    (and, unlike ``transform.inv``, leaves the ``log_abs_det_jacobian`` cache alone)."""
    if isinstance(transform, Bijector):
        return transform._backward_only(y)
    return transform.inv(y)


class ComposedBijector(Bijector):
    r"""Composition :math:`f = f_n \circ \dots \circ f_1` with summed ``ladj``.

    Arguments:
        transforms: The transforms :math:`f_1, \dots, f_n` (any torch ``Transform``).
        event_dim: Event dimensions of the composition.
    """

    def __init__(self, transforms: Sequence[Transform], event_dim: int = 1) -> None:
        super().__init__(event_dim)
        self.transforms = list(transforms)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[: x.dim() - self.event_dim])
        for t in self.transforms:
            x, ladj = call_and_ladj(t, x, self.event_dim)
            total = total + ladj
        return x, total

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        total = y.new_zeros(y.shape[: y.dim() - self.event_dim])
        for t in reversed(self.transforms):
            y, ladj = inverse_and_ladj(t, y, self.event_dim)
            total = total + ladj
        return y, total

    def _backward_only(self, y: Tensor) -> Tensor:
        for t in reversed(self.transforms):
            y = inverse(t, y)
        return y


class LazyBijector(nn.Module, abc.ABC):
    """A module that returns a bijector given a context ``c`` (``None`` when unconditional)."""

    @abc.abstractmethod
    def forward(self, c: Tensor | None = None) -> Transform:
        """The transform for context ``c``."""


class LazyComposed(LazyBijector):
    """Lazy composition of lazy bijectors; every block receives the same context."""

    def __init__(self, *blocks: nn.Module, event_dim: int = 1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.event_dim = event_dim

    def forward(self, c: Tensor | None = None) -> Transform:
        return ComposedBijector([b(c) for b in self.blocks], self.event_dim)


def _check(x: Tensor, features: int) -> None:
    if x.shape[-1:] != torch.Size([features]):
        raise ValueError(f"expected inputs of shape (*, {features}), got {tuple(x.shape)}")
