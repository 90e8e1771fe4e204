"""Rebuilding an NTM from the plain-data config its checkpoints carry (:meth:`NTM.config`),
configs written by earlier versions of ntmdist included.

A config is the constructor's arguments as JSON-like data: ``event_shape``, ``schedule``
(:meth:`Schedule.config`), ``transporter``/``predictor``/``step_flow`` (``"auto"``, ``None``,
``"flow_matching"`` for the predictor, or ``"custom"`` for a module the user passed, which cannot
be rebuilt), their options, ``classes``, ``label_dropout``, ``train_steps``,
``train_particles`` and optionally ``velocity`` and ``denoiser`` configs.
"""

from __future__ import annotations

from typing import TypeVar

from .schedule import Schedule

__all__ = ["rebuild", "upgrade"]

M = TypeVar("M")

REBUILT = ("transporter", "predictor", "step_flow", "velocity", "denoiser")


def upgrade(config: dict) -> dict:
    """The config as the current version writes it: one written before the vector defaults
    recorded their splines (it has no ``step_flow_options``; all were 8 bins on [-5, 5])
    rebuilds the networks it was trained with."""
    if "step_flow_options" in config:
        return config
    config = dict(config)
    vector = len(config["event_shape"]) == 1
    default_step = (vector and config["step_flow"] == "auto" and config["predictor"] == "auto"
                    and config["transporter"] is not None)
    config["step_flow_options"] = {"bins": 8, "bound": 5.0} if default_step else None
    if vector and config["transporter"] == "auto":
        config["transporter_options"] = {"bins": 8, **config["transporter_options"]}
    return config


def rebuild(cls: type[M], config: dict) -> M:
    """A model of class ``cls`` (:class:`~ntmdist.NTM`) with untrained weights, built from
    ``config``. Custom modules cannot be rebuilt: their names are reported."""
    custom = [k for k in REBUILT if config.get(k) == "custom"]
    if custom:
        raise ValueError(f"cannot rebuild custom modules from a config: {', '.join(custom)}")
    config = upgrade(config)
    if config["predictor"] == "flow_matching":
        from .flow_matching import Velocity

        model = cls.from_flow_matching(
            Velocity(**config["velocity"]), Schedule(**config["schedule"]),
            transporter=config["transporter"], classes=config["classes"],
            predictor_options=config["predictor_options"],
            transporter_options=config["transporter_options"],
            train_steps=config.get("train_steps"),
            train_particles=config.get("train_particles", 1),
        )
    else:
        model = cls(
            tuple(config["event_shape"]), Schedule(**config["schedule"]),
            transporter=config["transporter"], classes=config["classes"],
            step_flow=config["step_flow"], predictor_options=config["predictor_options"],
            transporter_options=config["transporter_options"],
            label_dropout=config.get("label_dropout"),
            step_flow_options=config["step_flow_options"],
            train_steps=config.get("train_steps"),
            train_particles=config.get("train_particles", 1),
        )
    if config.get("denoiser") is not None:
        from .distill import Denoiser

        model.denoiser = Denoiser(**config["denoiser"])
    return model
