"""The former home of the fit loop, kept so that ``from ntmdist.train import fit`` keeps
working: the training kit is :mod:`ntmdist.training`."""

from .training import (
    FitResult,
    aux_factor,
    ema_decay,
    fit,
    fit_denoiser,
    fit_velocity,
    lr_factor,
)

__all__ = ["FitResult", "aux_factor", "ema_decay", "fit", "fit_denoiser", "fit_velocity",
           "lr_factor"]
