r"""The fit loop: AdamW, linear warm-up then cosine decay, gradient clipping, an EMA copy of the
weights, periodic evaluation, atomic checkpoints with exact resume, and ``torch.distributed``.

The learning-rate, EMA-decay and alignment-weight schedules are those of :mod:`ntmdist.optim`.

All randomness comes from two CPU generators owned by the loop, one for batches and one passed
to the loss; their states are checkpointed, so a resumed run is bitwise the run that was not
interrupted. The global RNG of torch is never touched.

With ``aux_weight`` :math:`\lambda > 0` (fine-tuning from flow matching), the loss at step
:math:`n` adds the mean-alignment term of the predictor's means to those of a frozen copy of the
initial predictor on the same inputs, cosine-decayed to 0 (Gu et al., 2026, arXiv 2605.08078):

.. math:: \mathcal{L}_n = \mathcal{L}_{NLL} + \lambda\, \tfrac12 \big(1 + \cos(\pi n / N)\big)
          \, \overline{\| \mu - \mu_{frozen} \|^2} .
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .batches import batch_sampler
from .checkpoint import gather_states, load_checkpoint, metadata, plain, save_checkpoint
from .objective import Objective
from .optim import aux_factor, check_horizon, ema_decay, ema_update, held_groups, lr_factor

__all__ = ["FitResult", "aux_factor", "ema_decay", "fit", "lr_factor"]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: The trained model (trained in place; never the DDP wrapper).
        ema_model: A separate copy holding the EMA weights, or ``None`` when ``ema=None``. Its
            parameters are frozen (``requires_grad=False``): call ``.requires_grad_()`` on it
            before training it further.
        history: ``{"loss": [...], "grad_norm": [...], "eval": [{"step": n, ...}, ...]}``; loss
            and gradient norm per step (loss averaged over ranks), from step 1, across resumes.
        step: The last completed optimiser step.
        elapsed: Wall-clock seconds spent in this call.
    """

    model: nn.Module
    ema_model: nn.Module | None
    history: dict[str, list]
    step: int
    elapsed: float

    def apply_ema(self) -> nn.Module:
        """Copy the EMA weights into :attr:`model` (no-op without EMA) and return it."""
        if self.ema_model is not None:
            self.model.load_state_dict(self.ema_model.state_dict())
        return self.model


def _seed(seed: int, rank: int, stream: int) -> int:
    return (seed + 1_000_003 * (2 * rank + stream)) % 2**63


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


def fit(
    model: nn.Module, data: Any, *, steps: int, batch_size: int = 256, lr: float = 1e-3,
    weight_decay: float = 0.0, warmup: int | None = None, grad_clip: float | None = 1.0,
    ema: float | None = 0.999, eval_every: int | None = None,
    eval_fn: Callable[[nn.Module], dict] | None = None, checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000, resume: bool = False, seed: int = 0, progress: bool = True,
    device: str | torch.device | None = None, loss_fn: Callable[..., Tensor] | None = None,
    callback: Callable[[int, dict], None] | None = None, ddp_options: dict | None = None,
    aux_weight: float = 0.0, hold: dict[str, int] | None = None,
) -> FitResult:
    """Train ``model`` in place by minimising ``loss_fn`` on batches of ``data``.

    Arguments:
        model: Any module; by default its ``loss(x, y, generator=g)`` is minimised (for an
            :class:`~ntmdist.NTM`, the trajectory NLL in nats per dimension).
        data: A tensor ``x`` ``(N, *event)``, a pair ``(x, y)``, a map-style ``Dataset`` with
            items ``x`` or ``(x, y)`` (batches drawn uniformly with replacement), or a callable
            ``draw(batch_size, generator) -> x or (x, y)``.
        steps: Total optimiser steps (a resumed run continues up to ``steps``; resuming with
            other ``steps`` or ``warmup`` than the run that wrote the checkpoint warns, since
            the learning rate then jumps to this call's schedule).
        batch_size: Examples per step and per rank.
        lr, weight_decay: AdamW's (weight decay off by default: it biases the likelihood).
        warmup: Linear warm-up steps before the cosine decay to 0 at ``steps`` (default: 5%
            of ``steps``, at most 1000).
        grad_clip: Maximum gradient norm, or ``None``.
        ema: EMA decay (see the module docstring), or ``None`` for no EMA copy.
        eval_every, eval_fn: ``eval_fn(model) -> dict`` runs on rank 0 every ``eval_every``
            steps and at the last step, on the EMA copy when there is one (eval mode). Its
            metrics go to ``history["eval"]`` and the progress bar. It must not use collectives.
        checkpoint, checkpoint_every: Path written atomically (rank 0) every
            ``checkpoint_every`` steps and at the end; see :mod:`ntmdist.checkpoint`.
        resume: Continue from ``checkpoint`` when it exists (start afresh when it does not).
        seed: Seeds the loop's data and loss generators (offset per rank).
        progress: Show a tqdm bar (loss and it/s), on rank 0 only.
        device: Move the model there first (default: where its parameters are).
        loss_fn: ``loss_fn(model, x, y)`` returning a scalar; given ``generator=g`` too when it
            takes a ``generator`` argument (needed for exact resume of a random loss).
        callback: ``callback(step, {"loss": ..., "lr": ..., **metrics})`` after each step, rank 0.
        ddp_options: Keyword arguments for ``DistributedDataParallel``.
        aux_weight: :math:`\\lambda` of the mean-alignment term to a frozen copy of the initial
            ``model.predictor`` (see the module docstring; about 2.5 when fine-tuning an NTM
            from flow matching), weighted by :func:`aux_factor`. The raw term goes to
            ``history["aux"]`` and the callback gets ``aux`` and ``aux_weight``; the frozen
            copy is checkpointed (``"frozen"``) so that a resumed run matches.
        hold: ``{prefix: k}``: the parameters whose names (``model.named_parameters()``)
            start with ``prefix`` are held for the first ``k`` steps (their gradients dropped
            before clipping; AdamW's state for them starts at their first update), e.g.
            ``{"predictor.velocity": steps // 10}`` to calibrate a flow-matching NTM's scale
            head and transporter before its velocity trains.

    Under ``torch.distributed`` the loss is wrapped in DDP (gradients averaged), every rank
    draws its own batches and loss noise, and only rank 0 logs, evaluates and writes.

    Example:
        >>> import ntmdist as nd
        >>> model = nd.NTM((2,), transporter=None, predictor=nd.MLPPredictor(2, width=32, depth=1))
        >>> result = fit(model, torch.randn(256, 2), steps=5, batch_size=64, progress=False)
        >>> result.step, len(result.history["loss"]), result.ema_model is not model
        (5, 5, True)
    """
    warmup = min(1000, steps // 20) if warmup is None else warmup
    if steps < 0 or batch_size < 1 or warmup < 0 or checkpoint_every < 1:
        raise ValueError("need steps >= 0, batch_size >= 1, warmup >= 0, checkpoint_every >= 1")
    if ema is not None and not 0.0 <= ema < 1.0:
        raise ValueError(f"ema must be a decay in [0, 1) or None, got {ema!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if aux_weight < 0 or (aux_weight > 0 and not isinstance(getattr(model, "predictor", None),
                                                             nn.Module)):
        raise ValueError("aux_weight must be >= 0, and > 0 needs a model with a .predictor")
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if device is not None:
        model.to(device)
    ref = next(model.parameters(), None)
    if ref is None:
        raise ValueError(f"{type(model).__name__} has no parameters to train")
    device, dtype = ref.device, ref.dtype
    draw = batch_sampler(data, batch_size)
    frozen = copy.deepcopy(model.predictor).requires_grad_(False).eval() if aux_weight else None
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"every parameter of {type(model).__name__} is frozen "
                         "(requires_grad=False; FitResult.ema_model is): call "
                         ".requires_grad_() first")
    held = held_groups(model, hold or {})
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda n: lr_factor(n, steps, warmup))
    data_g = torch.Generator().manual_seed(_seed(seed, rank, 0))
    loss_g = torch.Generator().manual_seed(_seed(seed, rank, 1))
    history: dict[str, list] = {"loss": [], "grad_norm": [], "eval": []}
    start, elapsed_before, state = 0, 0.0, None
    if resume and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history, elapsed_before = state["step"], state["history"], state["elapsed"]
        if frozen is not None and state.get("frozen") is not None:
            frozen.load_state_dict(state["frozen"])
        check_horizon(state.get("horizon"), {"steps": steps, "warmup": warmup}, start)
        rng = state["rng"]
        if rng["data"].shape[0] == world:
            data_g.set_state(rng["data"][rank].clone())  # a view with an offset crashes
            loss_g.set_state(rng["loss"][rank].clone())
        else:
            warnings.warn(f"checkpoint was written by {rng['data'].shape[0]} ranks, resuming on "
                          f"{world}: generators reseeded, the run will not match", stacklevel=2)
            data_g.manual_seed(_seed(seed + start, rank, 0))
            loss_g.manual_seed(_seed(seed + start, rank, 1))
    objective = Objective(model, loss_fn, frozen)
    runner: nn.Module = objective
    if distributed:  # DDP broadcasts rank 0's weights, so the EMA copy is made after it
        ids = [device] if device.type == "cuda" else None
        runner = DistributedDataParallel(objective, device_ids=ids, **(ddp_options or {}))
    ema_model = None
    if ema is not None:
        ema_model = copy.deepcopy(model).requires_grad_(False)
        if state is not None and state["ema"] is not None:
            ema_model.load_state_dict(state["ema"])
    meta = metadata(model, world)
    unit = " nats/dim" if loss_fn is None else ""
    bar = tqdm(total=steps, initial=start, desc="fit", disable=not progress or rank != 0)
    training, begin, step, shown = model.training, time.perf_counter(), start, {}
    model.train()
    try:
        for step in range(start + 1, steps + 1):
            x, y = draw(data_g)
            x = x.to(device, dtype) if x.is_floating_point() else x.to(device)
            y = None if y is None else torch.as_tensor(y).to(device)
            weight = aux_weight * aux_factor(step - 1, steps)
            loss = runner(x, y, loss_g, weight) if frozen is not None else runner(x, y, loss_g)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            mean = loss.detach().clone()
            if distributed:
                dist.all_reduce(mean)
                mean /= world
            value = mean.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"non-finite loss {value} at step {step}")
            for until, group in held:
                if step <= until:
                    for p in group:
                        p.grad = None
            clip = grad_clip if grad_clip is not None else math.inf
            norm = torch.nn.utils.clip_grad_norm_(params, clip).item()
            rate = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            if ema_model is not None:
                ema_update(ema_model, model, ema_decay(ema, step))
            history["loss"].append(value)
            history["grad_norm"].append(norm)
            metrics: dict[str, Any] = {}
            aux: dict[str, float] = {}
            if frozen is not None:
                history.setdefault("aux", []).append(objective.aux.item())
                aux = {"aux": history["aux"][-1], "aux_weight": weight}
            due = step == steps or (eval_every is not None and step % eval_every == 0)
            if eval_fn is not None and rank == 0 and due:
                metrics = _evaluate(eval_fn, ema_model if ema_model is not None else model)
                history["eval"].append({"step": step, **metrics})
                shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            if checkpoint is not None and (step % checkpoint_every == 0 or step == steps):
                rng = {"data": gather_states(data_g.get_state(), world, device),
                       "loss": gather_states(loss_g.get_state(), world, device)}
                if rank == 0:
                    save_checkpoint(checkpoint, {
                        "step": step, "model": model.state_dict(),
                        "ema": None if ema_model is None else ema_model.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "rng": rng, "history": history, "meta": meta,
                        "horizon": {"steps": steps, "warmup": warmup},
                        "frozen": None if frozen is None else frozen.state_dict(),
                        "elapsed": elapsed_before + time.perf_counter() - begin,
                    })
            extra = "".join(f", {k}={v:.4g}" for k, v in shown.items())
            bar.set_postfix_str(f"loss={value:.4f}{unit}{extra}", refresh=False)
            bar.update()
            if callback is not None and rank == 0:
                callback(step, {"loss": value, "lr": rate, **aux, **metrics})
    finally:
        bar.close()
        model.train(training)
    return FitResult(model, ema_model, history, step, time.perf_counter() - begin)
