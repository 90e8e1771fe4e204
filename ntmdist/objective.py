r"""The training objective of :func:`ntmdist.train.fit` as one module (what DDP wraps): a model's
``loss(x, y, generator)`` or a user's ``loss_fn(model, x, y[, generator])``, plus, when
fine-tuning from flow matching, the mean-alignment term of the predictor's means to those of a
frozen copy on the same inputs (Gu et al., 2026, arXiv 2605.08078):

.. math:: \mathcal{L} = \mathcal{L}_{NLL} + \lambda\, \overline{\| \mu - \mu_{frozen} \|^2} .
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["Objective"]


def _takes_generator(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "generator" or p.kind is p.VAR_KEYWORD for p in params)


class Objective(nn.Module):
    """``model`` and its loss as one module, so that DDP sees the loss computation as forward.
    With a ``frozen`` predictor, every call of ``model.predictor`` inside the loss is hooked and
    the mean squared difference of its means to the frozen ones (a constant target) is added
    with weight ``aux_weight``; its value is kept in ``self.aux``."""

    def __init__(
        self, model: nn.Module, loss_fn: Callable | None, frozen: nn.Module | None = None
    ) -> None:
        super().__init__()
        if loss_fn is None and not callable(getattr(model, "loss", None)):
            raise TypeError(f"{type(model).__name__} has no loss(x, y, generator); pass loss_fn=")
        self.model, self.loss_fn, self.frozen = model, loss_fn, frozen
        self.generator_kw = loss_fn is not None and _takes_generator(loss_fn)
        self.aux: Tensor | None = None

    def forward(
        self, x: Tensor, y: Tensor | None, generator: torch.Generator, aux_weight: float = 0.0
    ) -> Tensor:
        if self.frozen is None:
            return self._loss(x, y, generator)
        calls: list = []
        hook = self.model.predictor.register_forward_hook(
            lambda m, args, kwargs, out: calls.append((args, kwargs, out[0])), with_kwargs=True)
        try:
            loss = self._loss(x, y, generator)
        finally:
            hook.remove()
        if not calls:
            raise RuntimeError("aux_weight > 0 but the loss never called model.predictor")
        with torch.no_grad():
            targets = [self.frozen(*args, **kwargs)[0] for args, kwargs, _ in calls]
        aux = torch.stack([(mu - mu0).square().mean()
                           for (_, _, mu), mu0 in zip(calls, targets, strict=True)]).mean()
        self.aux = aux.detach()
        return loss + aux_weight * aux

    def _loss(self, x: Tensor, y: Tensor | None, generator: torch.Generator) -> Tensor:
        if self.loss_fn is None:
            return self.model.loss(x, y, generator=generator)
        if self.generator_kw:
            return self.loss_fn(self.model, x, y, generator=generator)
        return self.loss_fn(self.model, x, y)
