r"""Mean alignment to a frozen copy: the auxiliary loss of fine-tuning from flow matching.

An NTM built by :meth:`ntmdist.NTM.from_flow_matching` starts as the flow-matching model used
as a Gaussian ancestral sampler; fine-tuning by likelihood then adds the non-Gaussian part. To
keep that stable, the means :math:`\mu` that the predictor computes inside the loss are pulled
towards those of a frozen copy of the initial predictor on the same inputs (Gu et al., 2026):

.. math:: A = \frac{1}{|C|} \sum_{c \in C} \overline{\big(\mu_c - \mu^{frozen}_c\big)^2} ,

the mean over the calls :math:`C` of the watched module during one loss evaluation of the mean
squared difference over the entries of its first output. :func:`ntmdist.training.fit` adds
:math:`\lambda_n A` with ``aux=MeanAlignment(model.predictor, weight=2.5)``, the weight
:math:`\lambda = 2.5` decayed by a cosine to 0 over the run.

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078

Example:
    >>> from torch import nn
    >>> net = nn.Linear(2, 2)
    >>> term = MeanAlignment(net, weight=2.5)
    >>> with term.watch():
    ...     _ = net(torch.randn(4, 2))
    >>> term().item()  # the network has not moved: its outputs are the frozen ones
    0.0
    >>> with torch.no_grad():
    ...     _ = net.bias.add_(1.0)
    >>> with term.watch():
    ...     _ = net(torch.randn(4, 2))
    >>> round(term().item(), 5)  # every output moved by 1
    1.0
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MeanAlignment"]


def _first(out: Any) -> Tensor:
    """The first output of a module: itself when a tensor, else its first element."""
    return out if torch.is_tensor(out) else out[0]


class MeanAlignment(nn.Module):
    r"""The mean-alignment term :math:`A` of ``module`` to a frozen copy of it (module docstring).

    The copy is made now (so pass the module in its initial state) and is the only submodule,
    so :meth:`state_dict` holds it and a resumed run aligns to the same copy; ``module`` itself
    is watched, not owned (its parameters stay the model's).

    Arguments:
        module: The module whose first output (a tensor, or the first element of a tuple such
            as a predictor's ``(mu, log_sigma)``) is aligned.
        weight: :math:`\lambda \geq 0`, the weight of the term at the first step.

    Use ``with term.watch(): loss = ...`` to record the module's calls, then ``term()`` for
    :math:`A` over them.
    """

    def __init__(self, module: nn.Module, weight: float = 2.5) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        self.weight = float(weight)
        self.frozen = copy.deepcopy(module).requires_grad_(False).eval()
        self._watched = (module,)  # a tuple: not registered as a submodule
        self._calls: list[tuple[tuple, dict, Tensor]] = []

    def train(self, mode: bool = True) -> MeanAlignment:
        """The frozen copy stays in eval mode."""
        super().train(mode)
        self.frozen.eval()
        return self

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Record the inputs and first outputs of every call of the module inside the block."""
        self._calls = []

        def record(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            self._calls.append((args, kwargs, _first(out)))

        hook = self._watched[0].register_forward_hook(record, with_kwargs=True)
        try:
            yield
        finally:
            hook.remove()

    def forward(self) -> Tensor:
        """:math:`A` over the calls recorded by the last :meth:`watch` (a scalar that carries
        the gradient of the module's outputs; the frozen outputs are constants)."""
        calls, self._calls = self._calls, []
        if not calls:
            raise RuntimeError("the loss never called the aligned module inside watch()")
        with torch.no_grad():
            targets = [_first(self.frozen(*args, **kwargs)) for args, kwargs, _ in calls]
        return torch.stack([(mu - mu0).square().mean()
                            for (_, _, mu), mu0 in zip(calls, targets, strict=True)]).mean()
