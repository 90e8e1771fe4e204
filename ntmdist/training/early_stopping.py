r"""Validation on held-out data and early stopping, for :func:`ntmdist.training.fit`.

Every ``every`` optimiser steps and at the last one, the training loss of the model (of its EMA
copy when there is one; eval mode, no gradients) is averaged over all :math:`N` held-out
examples, in batches :math:`b` of :math:`n_b` examples with mean loss :math:`L_b`:

.. math:: \bar L = \frac{1}{N} \sum_b n_b L_b .

The loss's noise (an NTM's loss draws trajectories) comes from a generator seeded the same way at
every validation, so two values differ only by the weights. The weights (model and EMA copy) of
the lowest value so far are kept; after ``patience`` validations in a row without a strictly
lower value the run stops, and the kept weights are restored, as they are at the last step.

References:
    | Early Stopping - But When? (Prechelt, 1998), in Neural Networks: Tricks of the Trade

Example:
    >>> from torch import nn
    >>> class Mean(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = nn.Parameter(torch.zeros(1))
    ...     def loss(self, x, y=None, generator=None):
    ...         return (x - self.w).square().mean()
    >>> stopping = EarlyStopping(torch.ones(5, 1), batch_size=2, every=1, patience=1)
    >>> model = Mean()
    >>> stopping.evaluate(model)
    1.0
    >>> stopping.observe(1, 1.0, model), stopping.observe(2, 1.5, model), stopping.stopped
    (True, False, True)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .batches import in_order, to_device
from .objective import LossFn, loss_function

__all__ = ["EarlyStopping"]


def _copy(model: nn.Module | None) -> dict | None:
    if model is None:
        return None
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class EarlyStopping:
    """The held-out loss, the best weights so far and the patience of a run.

    Arguments:
        data: Held-out examples: a tensor ``x``, tensors ``(x, y)`` or ``(x, y, mask)``, or a
            map-style ``Dataset`` with such items.
        batch_size: Examples per validation batch.
        every: Optimiser steps between validations (there is one at the last step too).
        patience: Validations without improvement before the run stops, or ``None`` to only
            record the values (then no weights are kept or restored).
        loss: ``loss(model, x, y, generator, mask=None)`` (default: ``model.loss``;
            :func:`ntmdist.training.objective.loss_function`).
        seed: Seed of the generator passed to the loss, the same at every validation.
    """

    def __init__(
        self, data: Any, *, batch_size: int, every: int, patience: int | None = None,
        loss: LossFn | None = None, seed: int = 0,
    ) -> None:
        if every < 1 or batch_size < 1 or (patience is not None and patience < 1):
            raise ValueError("need validate_every >= 1, batch_size >= 1 and patience >= 1 (or "
                             f"None), got {every}, {batch_size}, {patience}")
        next(in_order(data, 1))  # refuse callables and empty data now, not at the first check
        self.data, self.batch_size, self.every, self.patience = data, batch_size, every, patience
        self.loss, self.seed = loss or loss_function(None), seed
        self.best, self.best_step, self.waited, self.stopped = math.inf, None, 0, False
        self.weights: dict[str, dict | None] = {"model": None, "ema": None}

    def due(self, step: int, steps: int) -> bool:
        """Whether step ``step`` of ``steps`` validates."""
        return step % self.every == 0 or step == steps

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        """The mean loss of ``model`` over every held-out example (eval mode, fixed noise)."""
        ref = next(model.parameters())
        generator = torch.Generator().manual_seed(self.seed)
        training, total, count = model.training, 0.0, 0
        model.eval()
        try:
            for batch in in_order(self.data, self.batch_size):
                x, y, mask = to_device(batch, ref.device, ref.dtype)
                total += self.loss(model, x, y, generator, mask).item() * len(x)
                count += len(x)
        finally:
            model.train(training)
        return total / count

    def observe(
        self, step: int, value: float, model: nn.Module, ema_model: nn.Module | None = None
    ) -> bool:
        """Record the validation ``value`` at ``step``; return whether it improved."""
        improved = value < self.best
        if improved:
            self.best, self.best_step, self.waited = value, step, 0
            if self.patience is not None:
                self.weights = {"model": _copy(model), "ema": _copy(ema_model)}
        else:
            self.waited += 1
        self.stopped = self.patience is not None and self.waited >= self.patience
        return improved

    def restore(self, model: nn.Module, ema_model: nn.Module | None = None) -> None:
        """Load the kept weights into ``model`` and ``ema_model`` (nothing without patience)."""
        for name, target in (("model", model), ("ema", ema_model)):
            if target is not None and self.weights[name] is not None:
                target.load_state_dict(self.weights[name])

    @staticmethod
    def shared(value: float, device: torch.device) -> float:
        """Rank 0's ``value`` on every rank (under ``torch.distributed``; a collective), so that
        every rank stops at the same step."""
        if not (dist.is_available() and dist.is_initialized()):
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(tensor, 0)
        return tensor.item()

    def state_dict(self) -> dict[str, Any]:
        """The best value and step, the validations waited, whether stopped, the kept weights."""
        return {"best": self.best, "best_step": self.best_step, "waited": self.waited,
                "stopped": self.stopped, **self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.best, self.best_step = state["best"], state["best_step"]
        self.waited, self.stopped = state["waited"], state["stopped"]
        self.weights = {"model": state["model"], "ema": state["ema"]}
