r"""The fit loop: it draws batches, runs the objective, takes the step, evaluates, validates,
checkpoints and reports, and owns nothing else.

The parts: batches (:mod:`~ntmdist.training.batches`), the objective and its auxiliary term
(:mod:`~ntmdist.training.objective`), the step body (:mod:`~ntmdist.training.update`) with the
schedules of :mod:`~ntmdist.training.optim`, the generators and resume
(:mod:`~ntmdist.training.state`), checkpoints (:mod:`~ntmdist.training.checkpoint`) and early
stopping (:mod:`~ntmdist.training.early_stopping`). The loss at step :math:`n` of :math:`N` is

.. math:: \mathcal{L}_n = \mathcal{L}_{model} + \lambda\, \tfrac12 \big(1 + \cos(\pi n / N)\big)
          \, A ,

with the auxiliary term :math:`A` of weight :math:`\lambda` when one is given (e.g. the mean
alignment of flow-matching fine-tuning, :class:`ntmdist.alignment.MeanAlignment`; Gu et al.,
2026, arXiv 2605.08078).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .batches import batch_sampler, data_length, to_device
from .checkpoint import load_checkpoint, metadata, plain, save_checkpoint
from .early_stopping import EarlyStopping
from .objective import Objective, loss_function
from .optim import aux_factor
from .state import Generators, check_horizon, rank_seed, restore, snapshot
from .update import Update

__all__ = ["FitResult", "fit"]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: The trained model (trained in place; never the DDP wrapper).
        ema_model: A separate copy holding the EMA weights, or ``None`` when ``ema=None``. Its
            parameters are frozen (``requires_grad=False``): call ``.requires_grad_()`` on it
            before training it further.
        history: ``{"loss": [...], "grad_norm": [...], "eval": [{"step": n, ...}, ...]}``; loss
            and gradient norm per step (loss averaged over ranks), from step 1, across resumes;
            ``"aux"`` (the auxiliary term per step) and ``"validation"`` (``[{"step": n,
            "loss": ...}, ...]``) when there are.
        step: The last completed optimiser step (below ``steps`` when stopped early).
        elapsed: Wall-clock seconds spent in this call.
        best_step: The step of the lowest validation loss, with ``validation``.
    """

    model: nn.Module
    ema_model: nn.Module | None
    history: dict[str, list]
    step: int
    elapsed: float
    best_step: int | None = None

    def apply_ema(self) -> nn.Module:
        """Copy the EMA weights into :attr:`model` (no-op without EMA) and return it."""
        if self.ema_model is not None:
            self.model.load_state_dict(self.ema_model.state_dict())
        return self.model


def _evaluate(eval_fn: Callable, model: nn.Module) -> dict[str, Any]:
    training = model.training
    model.eval()
    try:
        metrics = eval_fn(model)
    finally:
        model.train(training)
    if not isinstance(metrics, dict):
        raise TypeError(f"eval_fn must return a dict of metrics, got {type(metrics).__name__}")
    return {str(k): float(v) if torch.is_tensor(v) and v.numel() == 1 else plain(v)
            for k, v in metrics.items()}


def _stopping(
    validation: Any, validate_every: int | None, patience: int | None, data: Any,
    batch_size: int, world: int, loss_fn: Callable | None, seed: int,
) -> EarlyStopping | None:
    if validation is None:
        if validate_every is not None or patience is not None:
            raise ValueError("validate_every and patience need validation= (held-out data)")
        return None
    if validate_every is None:
        n = data_length(data)
        if n is None:
            raise ValueError("pass validate_every= when data is a callable (it has no epoch)")
        validate_every = max(1, math.ceil(n / (batch_size * world)))
    return EarlyStopping(validation, batch_size=batch_size, every=validate_every,
                         patience=patience, loss=loss_function(loss_fn),
                         seed=rank_seed(seed, 0, 2))


def fit(
    model: nn.Module, data: Any, *, steps: int, batch_size: int = 256, lr: float = 1e-3,
    weight_decay: float = 0.0, warmup: int | None = None, grad_clip: float | None = 1.0,
    ema: float | None = 0.999, eval_every: int | None = None,
    eval_fn: Callable[[nn.Module], dict] | None = None, checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000, resume: bool = False, seed: int = 0, progress: bool = True,
    device: str | torch.device | None = None, loss_fn: Callable[..., Tensor] | None = None,
    callback: Callable[[int, dict], None] | None = None, ddp_options: dict | None = None,
    aux: nn.Module | None = None, hold: dict[str, int] | None = None, validation: Any = None,
    validate_every: int | None = None, patience: int | None = None,
) -> FitResult:
    """Train ``model`` in place by minimising ``loss_fn`` on batches of ``data``.

    Arguments:
        model: Any module; by default its ``loss(x, y, generator=g)`` is minimised (for an
            :class:`~ntmdist.NTM`, the trajectory NLL in nats per dimension), with ``mask=m``
            for data with masks.
        data: A tensor ``x`` ``(N, *event)``, a pair ``(x, y)`` (``y`` the condition: labels,
            context vectors or sequences), a triple ``(x, y, mask)`` (sequences and the
            boolean masks of their real tokens), a map-style ``Dataset`` with such items
            (batches drawn uniformly with replacement), or a callable
            ``draw(batch_size, generator)`` returning one of them
            (:mod:`~ntmdist.training.batches`).
        steps: Total optimiser steps (a resumed run continues up to ``steps``; resuming with
            other ``steps`` or ``warmup`` than the run that wrote the checkpoint warns, since
            the learning rate then jumps to this call's schedule).
        batch_size: Examples per step and per rank.
        lr, weight_decay: AdamW's (weight decay off by default: it biases the likelihood).
        warmup: Linear warm-up steps before the cosine decay to 0 at ``steps`` (default: 5%
            of ``steps``, at most 1000).
        grad_clip: Maximum gradient norm, or ``None``.
        ema: EMA decay (:mod:`ntmdist.training.optim`), or ``None`` for no EMA copy.
        eval_every, eval_fn: ``eval_fn(model) -> dict`` runs on rank 0 every ``eval_every``
            steps and at the last step, on the EMA copy when there is one (eval mode). Its
            metrics go to ``history["eval"]`` and the progress bar. It must not use collectives.
        checkpoint, checkpoint_every: Path written atomically (rank 0) every
            ``checkpoint_every`` steps and at the end; see :mod:`ntmdist.training.checkpoint`.
        resume: Continue from ``checkpoint`` when it exists (start afresh when it does not).
        seed: Seeds the loop's data and loss generators (offset per rank).
        progress: Show a tqdm bar (loss and it/s), on rank 0 only.
        device: Move the model there first (default: where its parameters are).
        loss_fn: ``loss_fn(model, x, y)`` returning a scalar; given ``generator=g`` too when it
            takes a ``generator`` argument (needed for exact resume of a random loss), and
            ``mask=m`` when the data has masks.
        callback: ``callback(step, {"loss": ..., "lr": ..., **metrics})`` after each step, rank 0.
        ddp_options: Keyword arguments for ``DistributedDataParallel``.
        aux: An auxiliary term (:mod:`ntmdist.training.objective`) added with its ``weight``
            times :func:`~ntmdist.training.optim.aux_factor`, e.g.
            ``MeanAlignment(model.predictor, weight=2.5)`` when fine-tuning an NTM from flow
            matching (:mod:`ntmdist.alignment`). The raw term goes to ``history["aux"]``, the
            callback gets ``aux`` and ``aux_weight``; its state is checkpointed.
        hold: ``{prefix: k}``: the parameters whose names (``model.named_parameters()``)
            start with ``prefix`` are held for the first ``k`` steps (their gradients dropped
            before clipping; AdamW's state for them starts at their first update), e.g.
            ``{"predictor.velocity": steps // 10}`` to calibrate a flow-matching NTM's scale
            head and transporter before its velocity trains.
        validation: Held-out data (tensors as ``data``, or a ``Dataset``): its mean loss
            (:mod:`ntmdist.training.early_stopping`) goes to ``history["validation"]`` and the
            callback (``validation``); :attr:`FitResult.best_step` is the best step.
        validate_every: Steps between validations (default: about one epoch of ``data``;
            needed when ``data`` is a callable).
        patience: Stop after this many validations without improvement; the weights of the
            best validation (model and EMA copy) are then restored, as they are at the last
            step. The state is checkpointed: resuming a stopped run returns at once.

    Under ``torch.distributed`` the loss is wrapped in DDP (gradients averaged), every rank
    draws its own batches and loss noise, and only rank 0 logs, evaluates, validates (the value
    is shared with every rank) and writes.

    Example:
        >>> import ntmdist as nd
        >>> model = nd.NTM((2,), transporter=None, predictor=nd.MLPPredictor(2, width=32, depth=1))
        >>> result = fit(model, torch.randn(256, 2), steps=5, batch_size=64, progress=False)
        >>> result.step, len(result.history["loss"]), result.ema_model is not model
        (5, 5, True)
    """
    from tqdm.auto import tqdm  # only training shows a progress bar: not on ``import ntmdist``

    warmup = min(1000, steps // 20) if warmup is None else warmup
    if steps < 0 or batch_size < 1 or warmup < 0 or checkpoint_every < 1:
        raise ValueError("need steps >= 0, batch_size >= 1, warmup >= 0, checkpoint_every >= 1")
    if ema is not None and not 0.0 <= ema < 1.0:
        raise ValueError(f"ema must be a decay in [0, 1) or None, got {ema!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if device is not None:
        model.to(device)
    ref = next(model.parameters(), None)
    if ref is None:
        raise ValueError(f"{type(model).__name__} has no parameters to train")
    device, dtype = ref.device, ref.dtype
    draw = batch_sampler(data, batch_size)
    if aux is not None:
        aux.to(device)
    update = Update(model, steps=steps, warmup=warmup, lr=lr, weight_decay=weight_decay,
                    grad_clip=grad_clip, hold=hold, ema=ema, world_size=world)
    objective = Objective(model, loss_fn, aux)
    stopping = _stopping(validation, validate_every, patience, data, batch_size, world,
                         loss_fn, seed)
    generators = Generators(seed, rank)
    parts = {"model": model, "optimizer": update.optimizer, "scheduler": update.scheduler,
             "aux": aux, "validation": stopping}
    history: dict[str, list] = {"loss": [], "grad_norm": [], "eval": []}
    start, elapsed_before, state = 0, 0.0, None
    if resume and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint)
        restore(state, parts)
        start, history, elapsed_before = state["step"], state["history"], state["elapsed"]
        check_horizon(state.get("horizon"), {"steps": steps, "warmup": warmup}, start)
        generators.load(state["rng"], world, start)
    runner: nn.Module = objective
    if distributed:  # DDP broadcasts rank 0's weights, so the EMA copy is made after it
        ids = [device] if device.type == "cuda" else None
        runner = DistributedDataParallel(objective, device_ids=ids, **(ddp_options or {}))
    ema_model = None if ema is None else copy.deepcopy(model).requires_grad_(False)
    parts["ema"] = ema_model
    if state is not None:
        restore(state, {"ema": ema_model})
    if stopping is not None:
        history.setdefault("validation", [])
    meta = metadata(model, world)
    unit = " nats/dim" if loss_fn is None else ""
    last = start if stopping is not None and stopping.stopped else steps
    bar = tqdm(total=steps, initial=start, desc="fit", disable=not progress or rank != 0)
    training, begin, step, shown = model.training, time.perf_counter(), start, {}
    model.train()
    try:
        for step in range(start + 1, last + 1):
            x, y, mask = to_device(draw(generators.data), device, dtype)
            weight = 0.0 if aux is None else aux.weight * aux_factor(step - 1, steps)
            value, norm, rate = update(runner(x, y, generators.loss, weight, mask), step,
                                       ema_model)
            history["loss"].append(value)
            history["grad_norm"].append(norm)
            metrics: dict[str, Any] = {}
            if aux is not None:
                history.setdefault("aux", []).append(objective.aux_value.item())
                metrics.update(aux=history["aux"][-1], aux_weight=weight)
            validated = ema_model if ema_model is not None else model
            due = step == steps or (eval_every is not None and step % eval_every == 0)
            if eval_fn is not None and rank == 0 and due:
                evaluated = _evaluate(eval_fn, validated)
                history["eval"].append({"step": step, **evaluated})
                shown = {k: v for k, v in evaluated.items() if isinstance(v, (int, float))}
                metrics.update(evaluated)
            if stopping is not None and stopping.due(step, steps):
                loss = stopping.shared(stopping.evaluate(validated) if rank == 0 else 0.0, device)
                history["validation"].append({"step": step, "loss": loss})
                stopping.observe(step, loss, model, ema_model)
                if stopping.stopped or step == steps:
                    stopping.restore(model, ema_model)
                shown["val"] = metrics["validation"] = loss
            stop = stopping is not None and stopping.stopped
            if checkpoint is not None and (step % checkpoint_every == 0 or step == steps or stop):
                rng = generators.state(world, device)
                if rank == 0:
                    save_checkpoint(checkpoint, {
                        "step": step, **snapshot(parts), "rng": rng, "history": history,
                        "meta": meta, "horizon": {"steps": steps, "warmup": warmup},
                        "elapsed": elapsed_before + time.perf_counter() - begin,
                    })
            extra = "".join(f", {k}={v:.4g}" for k, v in shown.items())
            bar.set_postfix_str(f"loss={value:.4f}{unit}{extra}", refresh=False)
            bar.update()
            if callback is not None and rank == 0:
                callback(step, {"loss": value, "lr": rate, **metrics})
            if stop:
                break
    finally:
        bar.close()
        model.train(training)
    best = None if stopping is None else stopping.best_step
    return FitResult(model, ema_model, history, step, time.perf_counter() - begin, best)
