r"""The bodies of the ``ntmdist`` commands (:mod:`ntmdist.cli.parser` parses the arguments).

Each command takes the parsed :class:`argparse.Namespace` and raises
:class:`ntmdist.cli.evaluation.UsageError` on bad input, which :func:`ntmdist.cli.main` turns
into a one-line message and exit status 2. ``fit`` trains with :func:`ntmdist.training.fit`;
the NLL it reports is the IWAE bound (:meth:`ntmdist.NTM.iwae`), an upper bound on
:math:`-\log p(x)`. ``fit`` and ``sample`` draw figures (:mod:`ntmdist.cli.plots`, the
``plots`` extra: matplotlib), imported when they start.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import Toy
from ..metrics import energy_distance, fraction_on_support
from ..model import NTM
from ..schedule import Schedule
from ..training import fit
from ..training.checkpoint import load_checkpoint, plain, same_config
from . import conditions
from .evaluation import (
    EVAL_SEED,
    UsageError,
    evaluate_model,
    heldout,
    load_model,
    resolve_data,
)
from .report import finite, table, write_json

__all__ = ["evaluate_command", "fit_command", "sample_command"]


def _load(path: str) -> tuple[NTM, dict[str, Any]]:
    try:
        return load_model(path)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from error


def _build(args: argparse.Namespace, dim: int, gaussian: bool,
           condition: dict[str, int]) -> NTM:
    hidden = (args.transporter_width,) * 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        try:
            model = NTM(
                (dim,), Schedule(steps=args.T, t_min=args.t_min, shift=args.shift),
                None if gaussian else "auto",
                step_flow=None if gaussian or args.step_flow == "none" else "auto",
                predictor_options={"width": args.width, "depth": args.depth},
                transporter_options=None if gaussian else {"hidden": hidden},
                train_steps=tuple(args.train_T) if args.train_T else None,
                train_particles=args.train_particles, **condition,
            )
        except ValueError as error:
            raise UsageError(str(error)) from error
    return model.to(torch.float32)


def _train(args: argparse.Namespace, model: NTM, data: Any, path: Path, label: str) -> dict:
    if args.resume and path.is_file():
        try:
            state = load_checkpoint(path)
        except ValueError as error:
            raise UsageError(f"cannot resume: {error}") from error
        if not same_config(state.get("meta", {}).get("model"), model):
            raise UsageError(f"cannot resume from {str(path)!r}: it holds a model with another "
                             "configuration; use the same options or another --out")
        print(f"{label}: resuming from step {state['step']} of {path}")
    print(f"{label}: training {args.steps} steps -> {path}")
    result = fit(model, data, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                 checkpoint=path, checkpoint_every=args.checkpoint_every, resume=args.resume,
                 seed=args.seed, progress=args.progress)
    trained = result.ema_model if result.ema_model is not None else result.model
    loss = result.history["loss"][-50:]
    info = {"step": result.step, "train_seconds": load_checkpoint(path)["elapsed"],
            "train_loss": sum(loss) / max(len(loss), 1)}
    return {"model": trained, **info}


def _split(args: argparse.Namespace, toy: Toy | None, array: Tensor | None,
           condition: Tensor | None) -> tuple[Any, Tensor, Tensor | None]:
    """Training data (a toy sampler, rows, or rows and their conditions) and held-out points
    (``min(eval_size, N/5)`` rows of an array, drawn at random) with their conditions."""
    if toy is not None:
        return toy.sample, heldout(toy, args.eval_size, args.seed), None
    if len(array) < 10:
        raise UsageError(f"{args.data!r} has {len(array)} rows; fit needs at least 10")
    perm = torch.randperm(len(array), generator=torch.Generator().manual_seed(args.seed))
    hold = min(args.eval_size, len(array) // 5)
    held, train = perm[:hold], perm[hold:]
    if condition is None:
        return array[train], array[held], None
    return (array[train], condition[train]), array[held], condition[held]


def _reference(toy: Toy | None, held: Tensor, seed: int) -> dict[str, Any]:
    """The data's own row: exact NLL, energy distance between two data samples (the noise
    floor of the estimate), fraction on the support."""
    row: dict[str, Any] = {"label": "data (held-out)"}
    if toy is not None:
        other = heldout(toy, len(held), seed, offset=1)
        row["energy_distance"] = energy_distance(other, held)
        if toy.log_prob is not None:
            row["nll"] = -toy.log_prob(held.double()).mean().item()
        if toy.support is not None:
            row["on_support"] = fraction_on_support(held, toy.support)
    return row


def fit_command(args: argparse.Namespace) -> None:
    """``ntmdist fit``: train the NTM (and, for toys, the Gaussian chain), evaluate both on
    held-out data, write ``model.pt``, ``metrics.json`` and ``samples.png`` and print the table."""
    from . import plots  # matplotlib: before training, so that a missing extra fails first

    name, toy, array = resolve_data(args.data)
    condition = conditions.paired(args, toy, array)
    train, held, held_y = _split(args, toy, array, condition)
    dim = held.shape[1]
    baseline = toy is not None if args.baseline is None else args.baseline
    out = Path(args.out or Path("runs") / name)
    specs = {"ntm": (f"NTM T={args.T}", False, out / "model.pt")}
    if baseline:
        specs["gaussian"] = (f"Gaussian T={args.T}", True, out / "baseline.pt")
    reference = _reference(toy, held, args.seed)
    rows: dict[str, dict[str, Any]] = {}
    shown = heldout(toy, args.samples, args.seed, offset=4) if toy is not None else array
    drawn, trajectories, grid = {"data": shown}, None, None
    for key, (label, gaussian, path) in specs.items():
        model = _build(args, dim, gaussian, conditions.arguments(condition))
        trained = _train(args, model, train, path, label)
        model = trained.pop("model")
        metrics, drawn[label] = evaluate_model(model, held, toy, args.particles, args.samples,
                                               args.seed, held_y)
        rows[key] = {"label": label, **trained, **metrics, "checkpoint": str(path)}
        if trajectories is None:
            g = torch.Generator().manual_seed(EVAL_SEED + 3 + args.seed)
            if held_y is None:
                trajectories = model().sample((2000,), g)
            else:  # given the held-out conditions in turn
                trajectories = model(held_y[torch.arange(2000) % len(held_y)]).sample((), g)
            grid = model.schedule.grid
    networks = (f"predictor width {args.width}, depth {args.depth}; transporter hidden "
                f"{args.transporter_width}x2; step flow {args.step_flow}; {args.steps} steps, "
                f"batch {args.batch_size}, lr {args.lr:g}")
    if dim >= 2:
        plots.overview(drawn, trajectories, grid, out / "samples.png",
                       title=f"{name}: {networks}")
    else:
        plots.scatter_panels(drawn, out / "samples.png")
    config = {k: v for k, v in vars(args).items() if k not in ("run", "parser")}
    summary = {"data": name, "event_shape": [dim], "config": plain(config),
               "condition": {k: v for k, v in model.condition.config().items() if v},
               "models": rows, "reference": reference}
    write_json(out / "metrics.json", summary)
    print(f"\n{name}: {len(held)} held-out points; NLL = IWAE bound with {args.particles} "
          f"particles (nats per example, {dim} dims); {networks}")
    print(table([reference, *rows.values()]))
    print(f"\nwrote {out / 'metrics.json'} and {out / 'samples.png'}")


def sample_command(args: argparse.Namespace) -> None:
    """``ntmdist sample``: samples of a checkpoint into a ``.npy`` file and a figure."""
    from . import plots

    model, _ = _load(args.checkpoint)
    y, rows = _sample_condition(args, model)
    n = args.n if args.n is not None else rows if rows not in (None, 1) else 10_000
    if rows not in (None, 1, n):
        raise UsageError(f"{'--context' if args.context else '--labels'} has {rows} rows: give "
                         f"one condition (repeated) or one per sample (--n {rows})")
    schedule = None
    trained = [s.steps for s in model.train_schedules]
    if args.T is not None and args.T != model.schedule.steps:
        try:
            schedule = model.schedule.with_steps(args.T)
        except ValueError as error:
            raise UsageError(str(error)) from error
        if args.T not in trained:
            print(f"note: the model was trained with T in {trained}; other T only work for "
                  "T it was trained with (fit --train-T)", file=sys.stderr)
    g = torch.Generator().manual_seed(args.seed)
    x = model.sample(n, y, generator=g, schedule=schedule)
    stem = Path(args.checkpoint).with_suffix("")
    out = Path(args.out or f"{stem}.samples.npy")
    png = Path(args.png or out.with_suffix(".png"))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, x.numpy())
    steps = args.T or model.schedule.steps
    if x.dim() == 2:
        plots.scatter_panels({f"NTM T={steps}, {n} samples": x}, png)
    else:
        plots.image_grid(x[:64], png)
    print(f"wrote {out} {tuple(x.shape)} and {png}")


def _sample_condition(args: argparse.Namespace, model: NTM) -> tuple[Tensor | None, int | None]:
    """The condition of ``sample`` (``--given``, ``--context``, ``--labels``) and its number
    of rows (``None`` for one ``--given`` condition or none)."""
    if args.given is not None:
        y = conditions.given(args.given, model.condition)
        return conditions.check(model, y, "--given", given_too=True), None
    y = conditions.read(args)
    source = "--context" if args.context else "--labels"
    y = conditions.check(model, y, source, given_too=True)
    return y, None if y is None else len(y)


def evaluate_command(args: argparse.Namespace) -> None:
    """``ntmdist evaluate``: held-out metrics of a checkpoint, written as JSON; conditional
    models are evaluated given the held-out conditions (``--context``, ``--labels``)."""
    model, state = _load(args.checkpoint)
    name, toy, array = resolve_data(args.data)
    condition = conditions.paired(args, toy, array)
    held_y = None
    if array is None:
        held = heldout(toy, args.eval_size, args.seed)
    else:
        g = torch.Generator().manual_seed(args.seed)
        rows = torch.randperm(len(array), generator=g)[: args.eval_size]
        held = array[rows]
        held_y = None if condition is None else condition[rows]
    if held.shape[1:] != model.event_shape or len(held) < 2:
        raise UsageError(f"data {args.data!r} has shape {tuple(held.shape)}; the model in "
                         f"{args.checkpoint!r} needs (N >= 2, "
                         f"{', '.join(map(str, model.event_shape))})")
    source = "--context" if args.context else "--labels"
    held_y = conditions.check(model, held_y, source)
    metrics, _ = evaluate_model(model, held, toy, args.particles, args.samples, args.seed,
                                held_y)
    report = {"checkpoint": str(args.checkpoint), "step": state.get("step"), "data": name,
              **metrics}
    out = Path(args.out or f"{Path(args.checkpoint).with_suffix('')}.metrics.json")
    write_json(out, report)
    print(json.dumps(finite(report), indent=2))
    print(f"wrote {out}", file=sys.stderr)
