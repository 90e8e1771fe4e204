r"""The body of one step of the fit loop, after the forward pass: backward, the loss averaged
over ranks (a non-finite loss stops the run before any update), held gradients dropped,
gradient clipping, the AdamW step, the learning-rate schedule, and the EMA of the weights
(:mod:`ntmdist.training.optim`):

.. math:: e_n = d_n e_{n-1} + (1 - d_n) w_n .

References:
    | Decoupled Weight Decay Regularization (Loshchilov and Hutter, 2017), arXiv 1711.05101

Example:
    >>> from torch import nn
    >>> model = nn.Linear(2, 1)
    >>> update = Update(model, steps=10, warmup=0, lr=0.1, weight_decay=0.0, grad_clip=1.0)
    >>> value, norm, lr = update(model(torch.ones(4, 2)).square().mean(), step=1)
    >>> lr
    0.1
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .optim import ema_decay, ema_update, held_groups, lr_factor

__all__ = ["Update"]


class Update:
    """The optimiser, its schedule and the held parameters of a run; calling it takes a step.

    Arguments:
        model: The module trained (never the DDP wrapper).
        steps, warmup: The length of the schedule (:func:`ntmdist.training.optim.lr_factor`).
        lr, weight_decay: AdamW's.
        grad_clip: Maximum gradient norm, or ``None``.
        hold: ``{prefix: k}``: parameters held for the first ``k`` steps.
        ema: EMA decay, or ``None``.
        world_size: Ranks whose losses are averaged for the logged value.
    """

    def __init__(
        self, model: nn.Module, *, steps: int, warmup: int, lr: float, weight_decay: float,
        grad_clip: float | None, hold: dict[str, int] | None = None, ema: float | None = None,
        world_size: int = 1,
    ) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError(f"every parameter of {type(model).__name__} is frozen "
                             "(requires_grad=False; FitResult.ema_model is): call "
                             ".requires_grad_() first")
        self.model, self.ema, self.world_size = model, ema, world_size
        self.held = held_groups(model, hold or {})
        self.grad_clip = math.inf if grad_clip is None else grad_clip
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda n: lr_factor(n, steps, warmup))

    def __call__(
        self, loss: Tensor, step: int, ema_model: nn.Module | None = None
    ) -> tuple[float, float, float]:
        """Take optimiser step ``step`` (1-based) on ``loss``; return the loss averaged over
        ranks, the gradient norm before clipping and the learning rate used."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        mean = loss.detach().clone()
        if self.world_size > 1:
            dist.all_reduce(mean)
            mean /= self.world_size
        value = mean.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss {value} at step {step}")
        for until, group in self.held:
            if step <= until:
                for p in group:
                    p.grad = None
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip).item()
        rate = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        if ema_model is not None:
            ema_update(ema_model, self.model, ema_decay(self.ema, step))
        return value, norm, rate
