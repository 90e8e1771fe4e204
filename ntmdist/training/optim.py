r"""The schedules of the fit loop: learning rate, auxiliary-term weight, EMA decay, held
parameters.

The learning rate at (0-based) optimiser step :math:`n` of :math:`N`, with :math:`W` warm-up
steps, is

.. math:: \mathrm{lr}_n = \mathrm{lr} \cdot \begin{cases} (n + 1) / W & n < W \\
          \tfrac12 \big(1 + \cos(\pi (n - W) / (N - W))\big) & n \geq W \end{cases}

and after update :math:`n \geq 1` the EMA weights are
:math:`e_n = d_n e_{n-1} + (1 - d_n) w_n`, :math:`d_n = \min(d, (1 + n) / (10 + n))`,
:math:`e_0 = w_0` (the warm-up of the decay keeps short runs from averaging in the random init).
The weight of an auxiliary term (``fit(aux=...)``, e.g. the mean alignment of flow-matching
fine-tuning, :mod:`ntmdist.alignment`; Gu et al., 2026, arXiv 2605.08078) decays as
:math:`\lambda \tfrac12 (1 + \cos(\pi n / N))`.

Example:
    >>> [round(lr_factor(n, steps=10, warmup=2), 3) for n in (0, 1, 2, 9)]
    [0.5, 1.0, 1.0, 0.038]
    >>> aux_factor(0, 10), aux_factor(10, 10), ema_decay(0.999, 1)
    (1.0, 0.0, 0.18181818181818182)
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["aux_factor", "ema_decay", "ema_update", "held_groups", "lr_factor"]


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Multiplier of the base learning rate at 0-based optimiser step ``step``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min((step - warmup) / max(steps - warmup, 1), 1.0)))


def aux_factor(step: int, steps: int) -> float:
    """Cosine decay of an auxiliary term's weight at 0-based step ``step``: from 1 to 0 at
    ``steps``."""
    return 0.5 * (1 + math.cos(math.pi * min(step / max(steps, 1), 1.0)))


def ema_decay(decay: float, step: int) -> float:
    """EMA decay used after 1-based update ``step``: ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def held_groups(model: nn.Module, hold: dict[str, int]) -> list[tuple[int, list[nn.Parameter]]]:
    """``(k, parameters)`` per prefix of ``hold``: the trainable parameters named ``prefix`` or
    ``prefix.*``, held for the first ``k`` steps. Every prefix must name some."""
    groups = []
    for prefix, until in hold.items():
        if isinstance(until, bool) or not isinstance(until, int) or until < 0:
            raise ValueError(f"hold[{prefix!r}] must be a number of steps >= 0, got {until!r}")
        group = [p for name, p in model.named_parameters()
                 if p.requires_grad and (name == prefix or name.startswith(prefix + "."))]
        if not group:
            raise ValueError(f"hold: no trainable parameter of {type(model).__name__} is "
                             f"named {prefix!r} or starts with {prefix + '.'!r}")
        groups.append((until, group))
    return groups
