r"""The training objective of :func:`ntmdist.training.fit` as one module (what DDP wraps): a
model's ``loss(x, y, generator)`` or a user's ``loss_fn(model, x, y[, generator])``, plus an
optional auxiliary term :math:`A` with the weight :math:`\lambda_n` of step :math:`n`:

.. math:: \mathcal{L}_n = \mathcal{L}_{model} + \lambda_n A .

An auxiliary term (``fit(aux=...)``) is an ``nn.Module`` with a ``weight`` :math:`\lambda \geq 0`
(decayed by :func:`ntmdist.training.optim.aux_factor`), a context manager ``watch()`` under
which the model's loss runs, and ``forward()`` returning the scalar :math:`A` of what it
watched; its ``state_dict()`` goes into checkpoints. The mean alignment of flow-matching
fine-tuning, :class:`ntmdist.alignment.MeanAlignment` (Gu et al., 2026, arXiv 2605.08078), is
one.

Example:
    >>> from torch import nn
    >>> objective = Objective(nn.Linear(2, 1), lambda model, x, y: model(x).square().mean())
    >>> objective(torch.zeros(3, 2), None, torch.Generator()).shape
    torch.Size([])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["LossFn", "Objective", "loss_function"]

LossFn = Callable[[nn.Module, Tensor, Tensor | None, torch.Generator], Tensor]


def _takes_generator(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "generator" or p.kind is p.VAR_KEYWORD for p in params)


def loss_function(loss_fn: Callable[..., Tensor] | None) -> LossFn:
    """``loss(model, x, y, generator)``: ``model.loss(x, y, generator=generator)`` without
    ``loss_fn``, else ``loss_fn(model, x, y)``, given ``generator=`` when it takes one."""
    if loss_fn is None:
        return lambda model, x, y, generator: model.loss(x, y, generator=generator)
    if _takes_generator(loss_fn):
        return lambda model, x, y, generator: loss_fn(model, x, y, generator=generator)
    return lambda model, x, y, generator: loss_fn(model, x, y)


class Objective(nn.Module):
    """``model`` and its loss as one module, so that DDP sees the loss computation as forward.
    With an auxiliary term ``aux``, the loss runs under ``aux.watch()`` and ``aux_weight``
    times the term is added; the term's value is kept in ``self.aux_value``."""

    def __init__(
        self, model: nn.Module, loss_fn: Callable[..., Tensor] | None,
        aux: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if loss_fn is None and not callable(getattr(model, "loss", None)):
            raise TypeError(f"{type(model).__name__} has no loss(x, y, generator); pass loss_fn=")
        self.model, self.aux, self.loss = model, aux, loss_function(loss_fn)
        self.aux_value: Tensor | None = None

    def forward(
        self, x: Tensor, y: Tensor | None, generator: torch.Generator, aux_weight: float = 0.0
    ) -> Tensor:
        if self.aux is None:
            return self.loss(self.model, x, y, generator)
        with self.aux.watch():
            loss = self.loss(self.model, x, y, generator)
        term = self.aux()
        self.aux_value = term.detach()
        return loss + aux_weight * term
