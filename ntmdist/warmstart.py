r"""An NTM initialised from flow matching: ``NTM.from_flow_matching`` (:func:`from_flow_matching`)
and its predictor (:func:`flow_matching_predictor`).

A flow-matching velocity :math:`v(x, t, y)` (regressing :math:`\epsilon - x_0`) becomes the
predictor :math:`\mu = A u_t + B (u_t - t v(u_t, t, y))`, :math:`\log \sigma = \log C + \delta`
(:class:`~ntmdist.predictor.FlowMatchingPredictor`, zero-initialised :math:`\delta` head); with a
zero-initialised transporter the NTM is then the flow-matching model used as a T-step Gaussian
ancestral sampler.

Reference:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078, section 3
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import nn

from .conditioning import ConditionSpec
from .predictor import FlowMatchingPredictor
from .schedule import Schedule

__all__ = ["flow_matching_predictor", "from_flow_matching"]

M = TypeVar("M")


def flow_matching_predictor(
    event_shape: torch.Size, condition: ConditionSpec, step_context: int, velocity: nn.Module,
    **options: object,
) -> FlowMatchingPredictor:
    """The named predictor ``"flow_matching"`` (:data:`ntmdist.defaults.PREDICTORS`): a
    :class:`~ntmdist.predictor.FlowMatchingPredictor` around a copy of ``velocity`` with the
    model's condition.

    The velocity is deep-copied and made trainable (``requires_grad_(True)``: a frozen argument,
    e.g. :func:`ntmdist.training.fit`'s ``ema_model``, would otherwise stay frozen). A velocity
    that has a condition (``velocity.conditioning.spec``) must have the model's.

    Example:
        >>> from ntmdist.flow_matching import Velocity
        >>> P = flow_matching_predictor(torch.Size([2]), ConditionSpec.of(context=3), 0,
        ...                             Velocity(2, width=8, context=3))
        >>> P(torch.randn(4, 2), torch.full((4,), 0.5), torch.full((4,), 0.2),
        ...   torch.randn(4, 3))[0].shape
        torch.Size([4, 2])
    """
    if not isinstance(velocity, nn.Module):
        raise TypeError("velocity must be a module called as velocity(x, t, y)")
    if step_context:
        raise ValueError("predictor 'flow_matching' gives no features for a per-step bijector")
    own = getattr(getattr(velocity, "conditioning", None), "spec", None)
    if own is not None and own != condition:
        raise ValueError(f"the velocity takes {own} but the model {condition}: build the "
                         "velocity with the same classes= or context=")
    velocity = copy.deepcopy(velocity).requires_grad_(True)
    return FlowMatchingPredictor(velocity, event_shape.numel(), condition.classes,
                                 context=condition.context, **options)


def from_flow_matching(
    cls: type[M], velocity: nn.Module, schedule: Schedule | None = None,
    transporter: str | nn.Module | list[nn.Module] | None = "auto", *,
    event_shape: tuple[int, ...] | None = None, classes: int | None = None,
    predictor_options: dict | None = None, transporter_options: dict | None = None,
    train_steps: Sequence[int] | None = None, train_particles: int = 1,
    context: int | Sequence[int] | None = None, context_net: nn.Module | None = None,
    condition_dropout: float | None = None, condition_transporter: bool = False,
    train_T: Sequence[int] | None = None,
) -> M:
    r"""``NTM.from_flow_matching``: an NTM (of class ``cls``) initialised from a flow-matching
    velocity :math:`v(x, t, y)` (regressing :math:`\epsilon - x_0`): a
    :class:`~ntmdist.predictor.FlowMatchingPredictor`,
    :math:`\mu = A u_t + B (u_t - t v(u_t, t, y))`, :math:`\log \sigma = \log C + \delta`
    (zero-initialised :math:`\delta` head), and a zero-initialised (identity) transporter.
    At initialisation the NTM is the flow-matching model used as a T-step Gaussian ancestral
    sampler (:func:`ntmdist.flow_matching.ancestral`), exactly for every step with
    :math:`C \geq \sigma_{min}` (all steps when :math:`t_{min} > 0` is not tiny), for any
    condition. Fine-tune with ``fit(model, data, steps=n, aux=MeanAlignment(model.predictor,
    2.5))`` (:class:`ntmdist.alignment.MeanAlignment`). The initial scale :math:`C` is far
    below the velocity's errors on the low-noise steps (the initial loss is large);
    ``hold={"predictor.velocity": k}`` lets the scale head and transporter calibrate for ``k``
    steps before the velocity trains (the benchmarks hold it ``n // 10``; see
    docs/ablations.md, section 2).

    Arguments:
        velocity: :class:`ntmdist.flow_matching.Velocity` or any module called as
            ``velocity(x, t, y)`` with ``t`` of shape ``x.shape[:1]``; it is deep-copied,
            so fine-tuning leaves the argument unchanged, and the copy is made trainable
            (``requires_grad_(True)``) even when the argument is frozen, e.g. the
            ``ema_model`` of :func:`ntmdist.training.fit`. Freeze
            ``model.predictor.velocity`` afterwards to fine-tune the rest only.
        schedule, transporter, transporter_options: As for :class:`~ntmdist.NTM`.
        train_T, train_particles, context_net, condition_dropout, condition_transporter:
            As for :class:`~ntmdist.NTM`.
        event_shape, classes, context: Default to the velocity's (its ``event_shape``
            and condition); a velocity with a condition must have the model's.
        predictor_options: Keyword arguments of
            :class:`~ntmdist.predictor.FlowMatchingPredictor`.

    Example:
        >>> import ntmdist as nd
        >>> from ntmdist.flow_matching import Velocity
        >>> model = nd.NTM.from_flow_matching(Velocity(2, width=32, depth=1),
        ...                                   nd.Schedule(4, 0.05))
        >>> model.sample(3).shape
        torch.Size([3, 2])
    """
    if not isinstance(velocity, nn.Module):
        raise TypeError("velocity must be a module called as velocity(x, t, y)")
    if event_shape is None:
        event_shape = getattr(velocity, "event_shape", None)
    if event_shape is None:
        raise ValueError("pass event_shape= for a velocity without an event_shape attribute")
    if classes is None and context is None:
        own = getattr(getattr(velocity, "conditioning", None), "spec", None)
        classes = getattr(velocity, "classes", None) if own is None else own.classes
        context = None if own is None else own.context
    options = {**(predictor_options or {}), "velocity": velocity}
    model = cls(tuple(event_shape), schedule, transporter, "flow_matching", classes,
                predictor_options=options, transporter_options=transporter_options,
                train_steps=train_steps, train_particles=train_particles, context=context,
                context_net=context_net, condition_dropout=condition_dropout,
                condition_transporter=condition_transporter, train_T=train_T)
    ref = next(model.predictor.velocity.parameters(), None)
    return model if ref is None else model.to(ref.device, ref.dtype)
