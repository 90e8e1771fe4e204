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
import math

from torch import nn

from .predictor import FlowMatchingPredictor

__all__ = ["flow_matching_predictor"]


def flow_matching_predictor(
    velocity: nn.Module, event_shape: tuple[int, ...] | None = None, classes: int | None = None,
    predictor_options: dict | None = None,
) -> tuple[FlowMatchingPredictor, tuple[int, ...], int | None, dict]:
    """``(predictor, event_shape, classes, config entries)`` for a velocity module.

    The velocity is deep-copied and made trainable (``requires_grad_(True)``: a frozen argument,
    e.g. :func:`ntmdist.train.fit`'s ``ema_model``, would otherwise stay frozen). ``event_shape``
    and ``classes`` default to the velocity's attributes of those names; the config entries
    record the velocity's own config (or ``"custom"``) so a checkpoint rebuilds the model.

    Example:
        >>> from ntmdist.flow_matching import Velocity
        >>> predictor, shape, classes, entries = flow_matching_predictor(Velocity(2, width=8))
        >>> shape, classes, entries["predictor"]
        ((2,), None, 'flow_matching')
    """
    if not isinstance(velocity, nn.Module):
        raise TypeError("velocity must be a module called as velocity(x, t, y)")
    if event_shape is None:
        event_shape = getattr(velocity, "event_shape", None)
    if event_shape is None:
        raise ValueError("pass event_shape= for a velocity without an event_shape attribute")
    classes = getattr(velocity, "classes", None) if classes is None else classes
    rebuild = callable(getattr(velocity, "config", None))
    velocity_config = velocity.config() if rebuild else {"backbone": "custom"}
    velocity = copy.deepcopy(velocity).requires_grad_(True)
    predictor = FlowMatchingPredictor(velocity, math.prod(event_shape), classes,
                                      **(predictor_options or {}))
    entries = {
        "predictor": "flow_matching", "predictor_options": dict(predictor_options or {}),
        "velocity": "custom" if velocity_config.get("backbone") == "custom" else velocity_config,
    }
    return predictor, tuple(event_shape), classes, entries
