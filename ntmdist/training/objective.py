r"""The training objective of :func:`ntmdist.training.fit` as one module (what DDP wraps): a
model's ``loss(x, y, generator)`` or a user's ``loss_fn(model, x, y[, generator])``, plus an
optional auxiliary term :math:`A` with the weight :math:`\lambda_n` of step :math:`n`:

.. math:: \mathcal{L}_n = \mathcal{L}_{model} + \lambda_n A .

Data with sequence masks (batches ``(x, y, mask)``) pass ``mask=`` to the loss; data without
masks never do, so losses written for ``(x, y)`` keep working.

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

LossFn = Callable[..., Tensor]
"""``loss(model, x, y, generator, mask=None)``, what :func:`loss_function` returns."""


def _takes(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def loss_function(loss_fn: Callable[..., Tensor] | None) -> LossFn:
    """``loss(model, x, y, generator, mask=None)``: ``model.loss(x, y, generator=generator)``
    without ``loss_fn``, else ``loss_fn(model, x, y)``, given ``generator=`` when it takes one;
    ``mask=`` is passed on only when it is not ``None``.

    Raises:
        TypeError: At a call with a mask, when ``loss_fn`` takes no ``mask`` argument.
    """
    generator_kw = loss_fn is None or _takes(loss_fn, "generator")
    mask_kw = loss_fn is None or _takes(loss_fn, "mask")
    def loss(model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator,
             mask: Tensor | None = None) -> Tensor:
        kwargs: dict = {"generator": generator} if generator_kw else {}
        if mask is not None:
            if not mask_kw:
                raise TypeError("the data has sequence masks, batches (x, y, mask), but loss_fn "
                                "takes no mask= argument")
            kwargs["mask"] = mask
        if loss_fn is None:
            return model.loss(x, y, **kwargs)
        return loss_fn(model, x, y, **kwargs)

    return loss


class Objective(nn.Module):
    """``model`` and its loss as one module, so that DDP sees the loss computation as forward
    (called with a batch ``x``, ``y``, the loss's generator, the auxiliary weight and ``mask``).
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
        self, x: Tensor, y: Tensor | None, generator: torch.Generator, aux_weight: float = 0.0,
        mask: Tensor | None = None,
    ) -> Tensor:
        if self.aux is None:
            return self.loss(self.model, x, y, generator, mask)
        with self.aux.watch():
            loss = self.loss(self.model, x, y, generator, mask)
        term = self.aux()
        self.aux_value = term.detach()
        return loss + aux_weight * term
