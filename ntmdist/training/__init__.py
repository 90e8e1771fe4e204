r"""The training kit: :func:`fit` (AdamW, warm-up and cosine decay, gradient clipping, an EMA
copy, periodic evaluation, validation with early stopping, atomic checkpoints with bitwise
resume, ``torch.distributed``) and the recipes built on it (:func:`fit_velocity`,
:func:`fit_denoiser`).

One module per responsibility: :mod:`~ntmdist.training.loop` (the loop),
:mod:`~ntmdist.training.update` (the step body), :mod:`~ntmdist.training.objective` (the loss
and an auxiliary term), :mod:`~ntmdist.training.optim` (schedules),
:mod:`~ntmdist.training.batches` (data), :mod:`~ntmdist.training.state` (generators and
resume), :mod:`~ntmdist.training.checkpoint` (files), :mod:`~ntmdist.training.early_stopping`
(validation) and :mod:`~ntmdist.training.recipes`. Nothing here knows an NTM's insides: what is
specific to a model (an auxiliary term such as :class:`ntmdist.alignment.MeanAlignment`, the
parameters to hold) is passed in. ``import ntmdist`` does not import this package.

Example (fine-tuning an NTM initialised from flow matching, with the mean alignment):
    >>> import torch
    >>> import ntmdist as nd
    >>> from ntmdist.alignment import MeanAlignment
    >>> from ntmdist.flow_matching import Velocity
    >>> model = nd.NTM.from_flow_matching(Velocity(2, width=16, depth=1), nd.Schedule(2, 0.05),
    ...                                   predictor_options={"width": 8, "depth": 1})
    >>> result = fit(model, torch.randn(64, 2), steps=3, batch_size=16, progress=False,
    ...              aux=MeanAlignment(model.predictor, weight=2.5),
    ...              hold={"predictor.velocity": 1})
    >>> len(result.history["aux"]), result.history["aux"][0]
    (3, 0.0)
"""

from .loop import FitResult, fit
from .optim import aux_factor, ema_decay, lr_factor
from .recipes import fit_denoiser, fit_velocity

__all__ = ["FitResult", "aux_factor", "ema_decay", "fit", "fit_denoiser", "fit_velocity",
           "lr_factor"]
