r"""Default networks of an NTM per kind of event (docs/design.md, section 5).

- Vectors ``(D,)``: a transporter of two spline masked-autoregressive blocks (alternating
  order, time-embedding context, zero-initialised), the residual-MLP predictor
  (:class:`~ntmdist.predictor.MLPPredictor`, width 256, depth 4) and, with ``step_flow="auto"``
  (the default), a spline autoregressive bijector per step conditioned on 64 predictor features
  of :math:`x_t` (docs/design.md, section 4). On the checkerboard (3000 steps,
  docs/ablations.md) the per-step bijector raised the fraction of samples on the support from
  92.0% to 94.6% and the IWAE NLL from 3.580 to 3.545 nats. It is left out with a user's
  predictor (whose features are unknown) and with ``transporter=None`` (Gaussian steps).
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
- Named predictors (:data:`PREDICTORS`): ``NTM(event_shape, predictor="unet")`` selects a
  network by name, with its options in ``predictor_options``; the config records the name.
  ``"mlp"`` (vectors) and ``"unet"`` (images) are the defaults, ``"transformer"`` is the
  image transformer over patch tokens (:class:`~ntmdist.dit.TransformerPredictor`),
  ``"flow_matching"`` is what :meth:`ntmdist.NTM.from_flow_matching` builds;
  :func:`register_predictor` adds others.
- A condition (labels, context vectors or sequences) enters every predictor through
  :class:`~ntmdist.conditioning.Conditioning`, and the default per-step bijector through the
  predictor's features; the transporter is condition-free unless ``condition_transporter=True``.

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
    | Normalizing Flows are Capable Generative Models (Zhai et al., 2024), arXiv 2412.06329
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .conditioning import ConditionSpec
from .dit import TransformerPredictor
from .predictor import ImagePredictor, MLPPredictor
from .transforms import MaskedAutoregressive
from .transporter import Transporter
from .warmstart import flow_matching_predictor

__all__ = ["DEFAULT_PREDICTORS", "FINE_SPLINES", "PREDICTORS", "STEP_CONTEXT", "build",
           "event_kind", "register_predictor", "resolve", "vector_passes", "vector_splines"]

STEP_CONTEXT = 64
"""Predictor features that condition the default per-step bijector."""

FINE_SPLINES = 8
"""Vectors of at most this many features get the finer default splines."""

_STEP_FLOW_KEYS = ("bins", "bound", "hidden", "passes")


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


def _mlp(event_shape: torch.Size, condition: ConditionSpec, step_context: int,
         **options: object) -> nn.Module:
    if len(event_shape) != 1:
        raise ValueError(f"predictor 'mlp' is for vectors (D,), got events of shape "
                         f"{tuple(event_shape)}")
    return MLPPredictor(event_shape[0], condition.classes, step_context=step_context,
                        context=condition.context, **options)


def _image(name: str, predictor: type[nn.Module]) -> Callable[..., nn.Module]:
    """The builder of the image predictor class ``predictor``, registered as ``name``."""

    def build(event_shape: torch.Size, condition: ConditionSpec, step_context: int,
              **options: object) -> nn.Module:
        if len(event_shape) != 3:
            raise ValueError(f"predictor {name!r} is for images (C, H, W), got events of shape "
                             f"{tuple(event_shape)}")
        if step_context:
            raise ValueError(f"predictor {name!r} gives no features for a per-step bijector")
        return predictor(tuple(event_shape), condition.classes, context=condition.context,
                         **options)

    return build


PredictorBuilder = Callable[..., nn.Module]

PREDICTORS: dict[str, PredictorBuilder] = {
    "mlp": _mlp, "unet": _image("unet", ImagePredictor),
    "transformer": _image("transformer", TransformerPredictor),
    "flow_matching": flow_matching_predictor,
}
"""Named predictors: ``build(event_shape, condition, step_context, **predictor_options)``
(:func:`register_predictor`)."""

DEFAULT_PREDICTORS = {"vector": "mlp", "image": "unet"}
"""The predictor ``NTM(predictor=None)`` builds, per kind of event."""


def register_predictor(name: str, build: PredictorBuilder) -> None:
    """Make ``NTM(event_shape, predictor=name, predictor_options=...)`` build
    ``build(event_shape, condition, step_context, **predictor_options)``: ``event_shape`` a
    ``torch.Size``, ``condition`` the model's :class:`~ntmdist.conditioning.ConditionSpec` and
    ``step_context`` the number of features the predictor must return as a third output for the
    per-step bijector (0: return ``(mu, log_sigma)``; raise ``ValueError`` if unsupported). The
    config records ``name``, so a checkpoint rebuilds the same network.

    Example:
        >>> register_predictor("tiny_mlp", lambda shape, condition, step_context, **o:
        ...     MLPPredictor(shape[0], condition.classes, width=8, depth=1,
        ...                  step_context=step_context, context=condition.context, **o))
        >>> import ntmdist as nd
        >>> nd.NTM((2,), predictor="tiny_mlp").config()["predictor"]
        'tiny_mlp'
        >>> del PREDICTORS["tiny_mlp"]
    """
    if not isinstance(name, str) or name in ("auto", "custom"):
        raise ValueError(f"a predictor name must be a string other than 'auto' and 'custom', "
                         f"got {name!r}")
    PREDICTORS[name] = build


def _predictor_name(event_shape: torch.Size, predictor: object) -> str:
    if isinstance(predictor, nn.Module):
        return "custom"
    if predictor is None:
        kind = event_kind(event_shape)
        if kind is None:
            raise ValueError("default networks exist for vectors (D,) and images (C, H, W); for "
                             f"events of shape {tuple(event_shape)} pass transporter= (or None) "
                             "and predictor=")
        return DEFAULT_PREDICTORS[kind]
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; known: {sorted(PREDICTORS)} or a "
                         "module")
    return predictor


def resolve(
    event_shape: torch.Size, transporter: object, predictor: object, step_flow: object,
    transporter_options: dict | None, step_flow_options: dict | None,
) -> dict:
    """The networks' names and options with the defaults filled in (what the config records, so
    that a checkpoint rebuilds the same blocks if the defaults change): ``transporter``
    (``"auto"``, ``None`` or ``"custom"``), ``predictor`` (a name of :data:`PREDICTORS` or
    ``"custom"``), ``step_flow``, ``transporter_options`` (the default vector transporter's
    ``passes`` and ``bins`` filled in) and ``step_flow_options`` (those of the default per-step
    bijector, ``None`` without it). The arguments are those of :class:`ntmdist.NTM`.

    Example:
        >>> r = resolve(torch.Size([2]), "auto", None, "auto", None, None)
        >>> r["predictor"], r["transporter_options"], r["step_flow_options"]["passes"]
        ('mlp', {'passes': 2, 'bins': 16}, 2)
    """
    kind = event_kind(event_shape)
    if transporter == "auto" and kind is None:
        raise ValueError("default networks exist for vectors (D,) and images (C, H, W); for "
                         f"events of shape {tuple(event_shape)} pass transporter= (or None) "
                         "and predictor=")
    if step_flow is not None and step_flow != "auto" and not isinstance(step_flow, nn.Module):
        raise TypeError("step_flow must be None, 'auto' or a lazy bijector module")
    name = _predictor_name(event_shape, predictor)
    # the default bijector needs the default vector predictor's features; with the identity
    # transporter "auto" keeps the reverse steps Gaussian
    default_step = (step_flow == "auto" and kind == "vector" and name == "mlp"
                    and transporter is not None)
    unknown = set(step_flow_options or {}) - set(_STEP_FLOW_KEYS)
    if unknown:
        raise TypeError(f"unknown step_flow_options {sorted(unknown)}; known: "
                        f"{sorted(_STEP_FLOW_KEYS)}")
    if step_flow_options and not default_step:
        raise ValueError("step_flow_options apply to the default per-step bijector, which this "
                         "model does not have (step_flow is not 'auto', or the event, predictor "
                         "or transporter is not the default vector one)")
    features = event_shape.numel()
    options = dict(transporter_options or {})
    if transporter == "auto" and kind == "vector":
        stepped = default_step or isinstance(step_flow, nn.Module)
        options.setdefault("passes", vector_passes(features, stepped))
        options.setdefault("bins", vector_splines(features)[0])
    step_options = None
    if default_step:
        step_options = {**vector_splines(features)[1], "passes": vector_passes(features, True),
                        **(step_flow_options or {})}
    return {
        "transporter": transporter if transporter in ("auto", None) else "custom",
        "predictor": name,
        "step_flow": step_flow if step_flow in ("auto", None) else "custom",
        "transporter_options": options,
        "step_flow_options": step_options,
    }


def _transporter(transporter: object, event_shape: torch.Size, options: dict,
                 condition: ConditionSpec | None) -> Transporter:
    ev = len(event_shape)
    if transporter == "auto" and ev == 1:
        return Transporter.default(event_shape.numel(), **options, condition=condition)
    if transporter == "auto":
        return Transporter.default_image(tuple(event_shape), **options, condition=condition)
    if transporter is None:
        if condition is not None:
            raise ValueError("condition_transporter=True needs transporter blocks, got "
                             "transporter=None")
        return Transporter(event_dim=ev)
    if isinstance(transporter, (list, tuple)):
        return Transporter(transporter, event_dim=ev, condition=condition)
    if not isinstance(transporter, Transporter):
        raise TypeError("transporter must be 'auto', None, a Transporter or a list of blocks")
    if condition is not None and transporter.conditioning is None:
        raise ValueError("condition_transporter=True with a Transporter built without "
                         "condition=; build it with Transporter(..., condition=spec)")
    return transporter


def build(
    event_shape: torch.Size, condition: ConditionSpec, resolved: dict, transporter: object,
    predictor: nn.Module | str | None, step_flow: object, predictor_options: dict | None,
    condition_transporter: bool = False,
) -> tuple[Transporter, nn.Module, nn.Module | None]:
    """The transporter, predictor and per-step bijector of an NTM from the ``resolved`` names
    and options (:func:`resolve`) and the modules the user passed. With
    ``condition_transporter``, the transporter's blocks are conditioned on the condition too
    (:class:`~ntmdist.transporter.Transporter`); the default per-step bijector is conditioned
    through the predictor's features, which see the condition.

    Example:
        >>> shape, spec = torch.Size([1, 8, 8]), ConditionSpec.of(classes=10)
        >>> f, P, h = build(shape, spec, resolve(shape, "auto", None, "auto", None, None),
        ...                 "auto", None, "auto", {"width": 16})
        >>> type(P).__name__, h is None
        ('ImagePredictor', True)
    """
    if condition_transporter and condition.kind == "none":
        raise ValueError("condition_transporter=True needs a condition (classes= or context=)")
    spec = condition if condition_transporter else None
    transporter = _transporter(transporter, event_shape, resolved["transporter_options"], spec)
    step_options = resolved["step_flow_options"]
    if step_options is not None:
        step_flow = MaskedAutoregressive(
            event_shape.numel(), STEP_CONTEXT, "spline", bins=step_options["bins"],
            bound=step_options["bound"], hidden=tuple(step_options["hidden"]),
            passes=step_options["passes"],
        )
    elif step_flow == "auto":
        step_flow = None
    if resolved["predictor"] != "custom":
        context = STEP_CONTEXT if step_options is not None else getattr(step_flow, "context", 0)
        predictor = PREDICTORS[resolved["predictor"]](event_shape, condition, context,
                                                      **(predictor_options or {}))
    return transporter, predictor, step_flow
