"""Training recipes built on :func:`ntmdist.training.fit`: a flow-matching velocity
(:func:`ntmdist.flow_matching.velocity_loss`) and a learned denoiser of a trained NTM
(:func:`ntmdist.distill.denoiser_loss`).

References:
    | Flow Matching for Generative Modeling (Lipman et al., 2022), arXiv 2210.02747
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from ..distill import Denoiser, denoiser_loss
from ..flow_matching import velocity_loss
from ..model import NTM
from ..validation import renamed
from .loop import FitResult, fit

__all__ = ["fit_denoiser", "fit_velocity"]


def fit_velocity(
    velocity: nn.Module, data: Any, *, steps: int, batch_size: int = 256,
    condition_dropout: float | None = None, label_dropout: float | None = None,
    **options: Any,
) -> FitResult:
    """Train ``velocity`` in place by flow matching, with :func:`ntmdist.training.fit` (same
    data conventions, masks of sequence contexts included; ``options`` are its keyword
    arguments: ``lr``, ``ema``, ``checkpoint``, ``validation``, ...). Each example's condition
    is dropped with probability ``condition_dropout`` (default 0;
    :func:`~ntmdist.flow_matching.velocity_loss`; ``label_dropout`` is its old name).

    Example:
        >>> from ntmdist.flow_matching import Velocity
        >>> v = Velocity(2, width=32, depth=1)
        >>> result = fit_velocity(v, torch.randn(256, 2), steps=5, batch_size=64, progress=False)
        >>> result.step, len(result.history["loss"])
        (5, 5)
    """
    p = renamed(condition_dropout, label_dropout, "condition_dropout", "label_dropout")
    loss_fn = functools.partial(velocity_loss, condition_dropout=p)
    return fit(velocity, data, steps=steps, batch_size=batch_size, loss_fn=loss_fn, **options)


def fit_denoiser(
    model: NTM, data: Any, *, steps: int, batch_size: int = 256,
    denoiser: nn.Module | None = None, **options: Any,
) -> FitResult:
    """Train a denoiser for ``model`` (frozen) and attach it as ``model.denoiser``.

    Arguments:
        model: A trained NTM; its parameters are frozen during the call and restored after.
        data: Real data, with the conventions of :func:`ntmdist.training.fit` (conditions and
            masks included).
        steps, batch_size: Optimiser steps and examples per step.
        denoiser: The network to train; by default ``model.denoiser`` if there is one, else a
            new :class:`~ntmdist.distill.Denoiser` with the model's condition (its classes, or
            its context vectors or sequences, after its ``context_net``).
        options: Keyword arguments of :func:`ntmdist.training.fit` (``lr``, ``ema``, ...). Its
            checkpoints hold the denoiser only; save ``model.state_dict()`` afterwards, which
            includes ``denoiser.*``.

    Returns:
        :func:`ntmdist.training.fit`'s result for the denoiser (``result.apply_ema()`` copies
        the EMA weights into the attached denoiser).

    Example:
        >>> import ntmdist as nd
        >>> model = nd.NTM((2,), transporter=None, predictor=nd.MLPPredictor(2, width=16, depth=1))
        >>> result = fit_denoiser(model, torch.randn(128, 2), steps=3, batch_size=32,
        ...                       progress=False)
        >>> model.sample(5, denoise="learned").shape
        torch.Size([5, 2])
    """
    if not isinstance(model, NTM):
        raise TypeError(f"model must be an ntmdist.NTM, got {type(model).__name__}")
    if denoiser is None:
        denoiser = model.denoiser
    if denoiser is None:
        ref = next(model.parameters())
        denoiser = Denoiser(model.features, model.classes, context=model.context)
        denoiser = denoiser.to(ref.device, ref.dtype)
    model.denoiser = None
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)

    def loss_fn(d: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator,
                mask: Tensor | None = None) -> Tensor:
        return denoiser_loss(d, model, x, y, generator, mask)

    try:
        return fit(denoiser, data, steps=steps, batch_size=batch_size, loss_fn=loss_fn,
                   **options)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.denoiser = denoiser
