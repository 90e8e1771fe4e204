r"""The configuration of an NTM: the one place that writes it (:func:`arguments`,
:func:`describe`) and rebuilds a model from it (:func:`rebuild`), configs written by earlier
versions of ntmdist included (:func:`upgrade`).

A config is the constructor's arguments as JSON-like data: ``event_shape``, ``schedule``
(:meth:`Schedule.config`), ``transporter`` (``"auto"``, ``None`` or ``"custom"``),
``predictor`` (a name of :data:`ntmdist.defaults.PREDICTORS`, e.g. ``"mlp"``, ``"unet"``,
``"flow_matching"``, or ``"custom"``), ``step_flow``, their options with the defaults filled in,
the condition (``classes``, ``context``), ``condition_dropout``, ``condition_transporter``,
``train_steps`` (the ``train_T`` argument), ``train_particles``, and the configs of optional
parts: ``velocity`` (of a flow-matching predictor), ``context_net`` and ``denoiser``. A part
registers how it is rebuilt (:func:`register_part`), so this module imports none of them;
``"custom"`` marks a module the user passed, which cannot be rebuilt.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from .schedule import Schedule

__all__ = ["arguments", "describe", "rebuild", "register_part", "upgrade"]

M = TypeVar("M")

_PARTS: dict[str, Callable[..., nn.Module]] = {}

NAMED = ("transporter", "predictor", "step_flow")
PARTS = ("velocity", "context_net", "denoiser")

# what "auto" built before predictors had names, per number of event dimensions
_AUTO_PREDICTOR = {1: "mlp", 3: "unet"}


def register_part(key: str, build: Callable[..., nn.Module]) -> None:
    """Rebuild the part ``key`` of a config (``"velocity"``, ``"context_net"``,
    ``"denoiser"``) as ``build(**config[key])``. A module of exactly that class whose
    ``config()`` names no ``"custom"`` piece is recorded by its ``config()``; any other module
    as ``"custom"``.

    Example:
        >>> import ntmdist as nd
        >>> _PARTS["denoiser"] is nd.distill.Denoiser  # distill registers its denoiser
        True
    """
    _PARTS[key] = build


def _part(key: str, module: nn.Module | None) -> dict | str | None:
    if module is None:
        return None
    build = _PARTS.get(key)
    if type(module) is not build or not callable(getattr(module, "config", None)):
        return "custom"
    config = module.config()
    return "custom" if "custom" in config.values() else config


def _build_part(key: str, config: dict | None) -> nn.Module | None:
    return None if config is None else _PARTS[key](**config)


def arguments(
    event_shape: tuple[int, ...], schedule: Schedule, condition: dict, resolved: dict,
    predictor_options: dict | None, condition_dropout: float | None,
    condition_transporter: bool, train_T: tuple[int, ...] | None, train_particles: int,
) -> dict:
    """The config of a model without its parts (:func:`describe` adds them): plain data from
    :class:`ntmdist.NTM`'s arguments, ``condition`` (``classes``, ``context``) and the names and
    options ``resolved`` by :func:`ntmdist.defaults.resolve`. Modules in ``predictor_options``
    are parts (the flow-matching predictor's ``velocity``), recorded by :func:`describe`.

    Example:
        >>> import ntmdist as nd
        >>> sorted(nd.NTM((2,), context=(3, 4))._arguments)[:4]
        ['classes', 'condition_dropout', 'condition_transporter', 'context']
    """
    options = {k: v for k, v in (predictor_options or {}).items()
               if not isinstance(v, nn.Module)}
    return copy.deepcopy({
        "event_shape": list(event_shape),
        "schedule": schedule.config(),
        "transporter": resolved["transporter"],
        "predictor": resolved["predictor"],
        **condition,
        "step_flow": resolved["step_flow"],
        "predictor_options": options,
        "transporter_options": resolved["transporter_options"],
        "step_flow_options": resolved["step_flow_options"],
        "condition_dropout": condition_dropout,
        "condition_transporter": condition_transporter,
        "train_steps": None if train_T is None else list(train_T),
        "train_particles": train_particles,
    })


def describe(model: Any) -> dict:
    """``model.config()``: its :func:`arguments` and the configs of its parts (present only
    where the model has them).

    Example:
        >>> import ntmdist as nd
        >>> model = nd.NTM((2,), context=3)
        >>> model.denoiser = nd.distill.Denoiser(2, context=3, width=8, depth=1)
        >>> describe(model)["denoiser"]["context"], describe(model)["predictor"]
        (3, 'mlp')
    """
    config = copy.deepcopy(model._arguments)
    velocity = None
    if config["predictor"] == "flow_matching":
        velocity = model.predictor.velocity
    parts = {"velocity": velocity, "context_net": model.context_net, "denoiser": model.denoiser}
    config.update({k: _part(k, m) for k, m in parts.items() if m is not None})
    return config


def upgrade(config: dict) -> dict:
    """The config as the current version writes it, from one of any earlier version: without
    ``step_flow_options`` (before the vector defaults recorded their splines, all 8 bins on
    [-5, 5]) it rebuilds the networks it was trained with; ``predictor: "auto"`` (before
    predictors had names) becomes ``"mlp"`` or ``"unet"``; ``label_dropout`` becomes
    ``condition_dropout``.

    Example:
        >>> old = {"event_shape": [2], "predictor": "auto", "transporter": None,
        ...        "step_flow": "auto", "transporter_options": {}, "label_dropout": None}
        >>> new = upgrade(old)
        >>> new["predictor"], new["condition_dropout"], new["step_flow_options"]
        ('mlp', None, None)
    """
    config = dict(config)
    ev = len(config["event_shape"])
    if config["predictor"] == "auto":
        config["predictor"] = _AUTO_PREDICTOR[ev]
    if "label_dropout" in config:
        config.setdefault("condition_dropout", config.pop("label_dropout"))
    if "step_flow_options" not in config:
        default_step = (ev == 1 and config["step_flow"] == "auto"
                        and config["predictor"] == "mlp" and config["transporter"] is not None)
        config["step_flow_options"] = {"bins": 8, "bound": 5.0} if default_step else None
        if ev == 1 and config["transporter"] == "auto":
            config["transporter_options"] = {"bins": 8, **config["transporter_options"]}
    return config


def rebuild(cls: type[M], config: dict) -> M:
    """A model of class ``cls`` (:class:`~ntmdist.NTM`) with untrained weights, built from
    ``config``. Custom modules cannot be rebuilt: their names are reported.

    Example:
        >>> import ntmdist as nd
        >>> model = nd.NTM((1, 8, 8), context=(5, 16), predictor="unet")
        >>> rebuild(nd.NTM, model.config()).config() == model.config()
        True
    """
    custom = [k for k in (*NAMED, *PARTS) if config.get(k) == "custom"]
    if custom:
        raise ValueError(f"cannot rebuild custom modules from a config: {', '.join(custom)}")
    config = upgrade(config)
    options = dict(config["predictor_options"])
    if config.get("velocity") is not None:
        options["velocity"] = _build_part("velocity", config["velocity"])
    context = config.get("context")
    model = cls(
        tuple(config["event_shape"]), Schedule(**config["schedule"]),
        transporter=config["transporter"], predictor=config["predictor"],
        classes=config["classes"], step_flow=config["step_flow"], predictor_options=options,
        transporter_options=config["transporter_options"],
        step_flow_options=config["step_flow_options"],
        train_T=config.get("train_steps"), train_particles=config.get("train_particles", 1),
        context=tuple(context) if isinstance(context, list) else context,
        context_net=_build_part("context_net", config.get("context_net")),
        condition_dropout=config.get("condition_dropout"),
        condition_transporter=config.get("condition_transporter", False),
    )
    model.denoiser = _build_part("denoiser", config.get("denoiser"))
    return model
