r"""The predictor of an NTM initialised from flow matching (``NTM.from_flow_matching``).

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

import torch
from torch import nn

from .conditioning import ConditionSpec
from .predictor import FlowMatchingPredictor

__all__ = ["flow_matching_predictor"]


def flow_matching_predictor(
    event_shape: torch.Size, condition: ConditionSpec, step_context: int, velocity: nn.Module,
    **options: object,
) -> FlowMatchingPredictor:
    """The named predictor ``"flow_matching"`` (:data:`ntmdist.defaults.PREDICTORS`): a
    :class:`~ntmdist.predictor.FlowMatchingPredictor` around a copy of ``velocity`` with the
    model's condition.

    The velocity is deep-copied and made trainable (``requires_grad_(True)``: a frozen argument,
    e.g. :func:`ntmdist.train.fit`'s ``ema_model``, would otherwise stay frozen). A velocity that
    has a condition (``velocity.conditioning.spec``) must have the model's.

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
