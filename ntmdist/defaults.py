r"""Default networks of an NTM per kind of event (DESIGN section 5).

- Vectors ``(D,)``: a transporter of two spline masked-autoregressive blocks (alternating
  order, time-embedding context, zero-initialised), the residual-MLP predictor
  (:class:`~ntmdist.predictor.MLPPredictor`, width 256, depth 4) and, with ``step_flow="auto"``
  (the default), a spline autoregressive bijector per step conditioned on 64 predictor features
  of :math:`x_t` (DESIGN section 4). On the checkerboard (3000 steps, README) the per-step
  bijector raised the fraction of samples on the support from 92.0% to 94.6% and the IWAE NLL
  from 3.580 to 3.545 nats. It is left out with a user's predictor (whose features are unknown)
  and with ``transporter=None`` (Gaussian steps).
- Spline resolution (:func:`vector_splines`): for ``D <= 8`` 16 bins in the transporter and 16
  bins on [-3, 3] in the per-step bijector; with 8 bins on [-5, 5] in both the checkerboard
  reached 3.529 nats / 96.1% (means of 3 seeds), with the finer splines 3.513 nats / 96.7%
  (means of 7 seeds; zuko NSF 3.515 / 96.9% at the same learning rate;
  ``benchmarks/ablate.py``). Above ``D = 8`` 8 bins on [-5, 5]: the spline parameters are
  ``D (3K - 1)`` outputs per network, and at ``D = 64`` 16 bins trained ~1.7x slower relative
  to zuko NSF and sampled ~1.4x slower (``benchmarks/speed.py``).
- Sequential passes of the vector bijectors (:func:`vector_passes`): their inverses, which
  sampling runs, take one network pass per group of features. On the 64-dimensional digits
  (flattened, 600 steps, IWAE bits/dim, ``benchmarks/passes.py``) 2 groups cost ~0.01 with the
  per-step bijector (2.147 vs 2.135 for 64 = fully autoregressive, means over four
  initialisations) and sampled 7.2-8.2x faster; without it (the paper's configuration) 4 groups
  matched 64 (2.175 vs 2.172) and 2 lost ~0.02. Hence 2 groups with the per-step bijector, 4
  without; ``D <= 2`` is fully autoregressive either way.
- Images ``(C, H, W)``: two TarFlow causal-transformer affine blocks over patches (alternating
  raster order; :meth:`~ntmdist.transporter.Transporter.default_image`) and the FiLM U-Net
  predictor (:class:`~ntmdist.predictor.ImagePredictor`); ``step_flow="auto"`` is none.

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
    | Normalizing Flows are Capable Generative Models (Zhai et al., 2024), arXiv 2412.06329
"""

from __future__ import annotations

import torch
from torch import nn

from .predictor import ImagePredictor, MLPPredictor
from .transforms import MaskedAutoregressive
from .transporter import Transporter

__all__ = ["FINE_SPLINES", "STEP_CONTEXT", "default_networks", "event_kind", "vector_passes",
           "vector_splines"]

STEP_CONTEXT = 64
"""Predictor features that condition the default per-step bijector."""

FINE_SPLINES = 8
"""Vectors of at most this many features get the finer default splines."""

_STEP_FLOW_KEYS = ("bins", "bound", "hidden", "passes")

Networks = tuple[Transporter, nn.Module, nn.Module | None, dict, dict | None]


def vector_passes(features: int, step_flow: bool) -> int:
    """Groups of features (sequential passes of the inverse) of the default vector transporter
    and per-step bijector: 2 with the per-step bijector, 4 without, at most ``features``.

    Example:
        >>> vector_passes(64, step_flow=True), vector_passes(64, step_flow=False)
        (2, 4)
    """
    return min(features, 2 if step_flow else 4)


def vector_splines(features: int) -> tuple[int, dict]:
    """Spline bins of the default vector transporter and the spline options of the default
    per-step bijector (``step_flow_options`` override them): finer for ``D <= 8``.

    Example:
        >>> vector_splines(2)
        (16, {'bins': 16, 'bound': 3.0, 'hidden': [128, 128]})
        >>> vector_splines(64)
        (8, {'bins': 8, 'bound': 5.0, 'hidden': [128, 128]})
    """
    if features <= FINE_SPLINES:
        return 16, {"bins": 16, "bound": 3.0, "hidden": [128, 128]}
    return 8, {"bins": 8, "bound": 5.0, "hidden": [128, 128]}


def event_kind(event_shape: torch.Size) -> str | None:
    """``"vector"`` for ``(D,)``, ``"image"`` for ``(C, H, W)``, ``None`` otherwise."""
    return {1: "vector", 3: "image"}.get(len(event_shape))


def _transporter(transporter: object, event_shape: torch.Size, options: dict) -> Transporter:
    kind, ev = event_kind(event_shape), len(event_shape)
    if transporter == "auto" and kind == "vector":
        return Transporter.default(event_shape.numel(), **options)
    if transporter == "auto":
        return Transporter.default_image(tuple(event_shape), **options)
    if transporter is None:
        return Transporter(event_dim=ev)
    if isinstance(transporter, (list, tuple)):
        return Transporter(transporter, event_dim=ev)
    if not isinstance(transporter, Transporter):
        raise TypeError("transporter must be 'auto', None, a Transporter or a list of blocks")
    return transporter


def default_networks(
    event_shape: torch.Size, classes: int | None, transporter: object, predictor: nn.Module | None,
    step_flow: object, predictor_options: dict | None, transporter_options: dict | None,
    step_flow_options: dict | None = None,
) -> Networks:
    """The transporter, predictor and per-step bijector of an NTM, defaults filled in (the
    arguments are those of :class:`ntmdist.NTM`), the transporter options with the default
    vector transporter's ``passes`` and ``bins`` filled in and the default per-step bijector's
    options (so a checkpoint's config rebuilds the same blocks if the defaults change)."""
    kind = event_kind(event_shape)
    if kind is None and (transporter == "auto" or predictor is None):
        raise ValueError("default networks exist for vectors (D,) and images (C, H, W); for "
                         f"events of shape {tuple(event_shape)} pass transporter= (or None) "
                         "and predictor=")
    if step_flow is not None and step_flow != "auto" and not isinstance(step_flow, nn.Module):
        raise TypeError("step_flow must be None, 'auto' or a lazy bijector module")
    if step_flow == "auto" and (kind != "vector" or predictor is not None or transporter is None):
        # the default bijector needs the default vector predictor's features; with the identity
        # transporter "auto" keeps the reverse steps Gaussian
        step_flow = None
    features = event_shape.numel()
    options = dict(transporter_options or {})
    if transporter == "auto" and kind == "vector":
        options.setdefault("passes", vector_passes(features, step_flow is not None))
        options.setdefault("bins", vector_splines(features)[0])
    transporter = _transporter(transporter, event_shape, options)
    context = STEP_CONTEXT if step_flow == "auto" else getattr(step_flow, "context", 0)
    if predictor is None and kind == "image":
        predictor = ImagePredictor(tuple(event_shape), classes=classes,
                                   **(predictor_options or {}))
    elif predictor is None:
        predictor = MLPPredictor(features, classes=classes, step_context=context,
                                 **(predictor_options or {}))
    unknown = set(step_flow_options or {}) - set(_STEP_FLOW_KEYS)
    if unknown:
        raise TypeError(f"unknown step_flow_options {sorted(unknown)}; known: "
                        f"{sorted(_STEP_FLOW_KEYS)}")
    if step_flow_options and step_flow != "auto":
        raise ValueError("step_flow_options apply to the default per-step bijector, which this "
                         "model does not have (step_flow is not 'auto', or the event, predictor "
                         "or transporter is not the default vector one)")
    step_options = None
    if step_flow == "auto":
        step_options = {**vector_splines(features)[1], "passes": vector_passes(features, True),
                        **(step_flow_options or {})}
        step_flow = MaskedAutoregressive(
            features, context, "spline", bins=step_options["bins"],
            bound=step_options["bound"], hidden=tuple(step_options["hidden"]),
            passes=step_options["passes"],
        )
    return transporter, predictor, step_flow, options, step_options
