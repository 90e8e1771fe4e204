r"""Command line: ``ntmdist fit``, ``ntmdist sample`` and ``ntmdist evaluate``
(also ``python -m ntmdist``).

.. code-block:: text

    ntmdist fit checkerboard --steps 2000 --out runs/checker  # model.pt metrics.json samples.png
    ntmdist fit points.npy --T 8 --width 128                  # any float array (N, D)
    ntmdist sample runs/checker/model.pt --n 5000 --out x.npy --png x.png
    ntmdist evaluate runs/checker/model.pt checkerboard --particles 256

``fit`` trains an NTM with :func:`ntmdist.train.fit` (atomic, resumable checkpoints) and, for
the built-in toys, the same chain with Gaussian reverse steps (``transporter=None``) for
comparison, then evaluates both on held-out data. The NLL is the IWAE bound
(:meth:`ntmdist.NTM.iwae`), an upper bound on :math:`-\log p(x)` in nats per example (summed over
dimensions); the energy distance compares samples with held-out data; for toys with a bounded
support (the checkerboard) the fraction of samples on it is reported. Checkpoints carry the model
configuration, so ``sample`` and ``evaluate`` need nothing else.

Bad input (an unknown data name, a missing, truncated or foreign checkpoint, data of the wrong
shape) ends with a one-line message and exit status 2, like any argparse usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import plots
from .checkpoint import load_checkpoint, plain
from .data import TOYS, Toy
from .evaluate import (
    _EVAL_SEED,
    UsageError,
    _data,
    _finite,
    _heldout,
    _load_model,
    _table,
    _write_json,
    evaluate_model,
    load_array,
    load_model,
)
from .metrics import energy_distance, fraction_on_support
from .model import NTM
from .schedule import Schedule
from .train import fit

__all__ = ["evaluate_model", "load_array", "load_model", "main"]

def _build(args: argparse.Namespace, dim: int, gaussian: bool) -> NTM:
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
        if state.get("meta", {}).get("model") != plain(model.config()):
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


def _split(args: argparse.Namespace, toy: Toy | None, array: Tensor | None) -> tuple[Any, Tensor]:
    """Training data (a toy sampler or rows) and held-out points (``min(eval_size, N/5)`` rows
    of an array, drawn at random)."""
    if toy is not None:
        return toy.sample, _heldout(toy, args.eval_size, args.seed)
    if len(array) < 10:
        raise UsageError(f"{args.data!r} has {len(array)} rows; fit needs at least 10")
    perm = torch.randperm(len(array), generator=torch.Generator().manual_seed(args.seed))
    hold = min(args.eval_size, len(array) // 5)
    return array[perm[hold:]], array[perm[:hold]]


def _reference(toy: Toy | None, heldout: Tensor, seed: int) -> dict[str, Any]:
    """The data's own row: exact NLL, energy distance between two data samples (the noise
    floor of the estimate), fraction on the support."""
    row: dict[str, Any] = {"label": "data (held-out)"}
    if toy is not None:
        other = _heldout(toy, len(heldout), seed, offset=1)
        row["energy_distance"] = energy_distance(other, heldout)
        if toy.log_prob is not None:
            row["nll"] = -toy.log_prob(heldout.double()).mean().item()
        if toy.support is not None:
            row["on_support"] = fraction_on_support(heldout, toy.support)
    return row


def _fit(args: argparse.Namespace) -> None:
    name, toy, array = _data(args.data)
    train, heldout = _split(args, toy, array)
    dim = heldout.shape[1]
    baseline = toy is not None if args.baseline is None else args.baseline
    out = Path(args.out or Path("runs") / name)
    specs = {"ntm": (f"NTM T={args.T}", False, out / "model.pt")}
    if baseline:
        specs["gaussian"] = (f"Gaussian T={args.T}", True, out / "baseline.pt")
    reference = _reference(toy, heldout, args.seed)
    rows: dict[str, dict[str, Any]] = {}
    shown = _heldout(toy, args.samples, args.seed, offset=4) if toy is not None else array
    drawn, trajectories, grid = {"data": shown}, None, None
    for key, (label, gaussian, path) in specs.items():
        trained = _train(args, _build(args, dim, gaussian), train, path, label)
        model = trained.pop("model")
        metrics, drawn[label] = evaluate_model(model, heldout, toy, args.particles, args.samples,
                                               args.seed)
        rows[key] = {"label": label, **trained, **metrics, "checkpoint": str(path)}
        if trajectories is None:
            g = torch.Generator().manual_seed(_EVAL_SEED + 3 + args.seed)
            trajectories, grid = model().sample((2000,), g), model.schedule.grid
    networks = (f"predictor width {args.width}, depth {args.depth}; transporter hidden "
                f"{args.transporter_width}x2; step flow {args.step_flow}; {args.steps} steps, "
                f"batch {args.batch_size}, lr {args.lr:g}")
    if dim >= 2:
        plots.overview(drawn, trajectories, grid, out / "samples.png",
                       title=f"{name}: {networks}")
    else:
        plots.scatter_panels(drawn, out / "samples.png")
    config = {k: v for k, v in vars(args).items() if k not in ("run", "parser")}
    summary = {"data": name, "event_shape": [dim], "config": plain(config), "models": rows,
               "reference": reference}
    _write_json(out / "metrics.json", summary)
    print(f"\n{name}: {len(heldout)} held-out points; NLL = IWAE bound with {args.particles} "
          f"particles (nats per example, {dim} dims); {networks}")
    print(_table([reference, *rows.values()]))
    print(f"\nwrote {out / 'metrics.json'} and {out / 'samples.png'}")


def _sample(args: argparse.Namespace) -> None:
    model, _ = _load_model(args.checkpoint)
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
    x = model.sample(args.n, generator=g, schedule=schedule)
    stem = Path(args.checkpoint).with_suffix("")
    out = Path(args.out or f"{stem}.samples.npy")
    png = Path(args.png or out.with_suffix(".png"))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, x.numpy())
    steps = args.T or model.schedule.steps
    if x.dim() == 2:
        plots.scatter_panels({f"NTM T={steps}, {args.n} samples": x}, png)
    else:
        plots.image_grid(x[:64], png)
    print(f"wrote {out} {tuple(x.shape)} and {png}")


def _evaluate(args: argparse.Namespace) -> None:
    model, state = _load_model(args.checkpoint)
    name, toy, array = _data(args.data)
    if array is None:
        heldout = _heldout(toy, args.eval_size, args.seed)
    else:
        g = torch.Generator().manual_seed(args.seed)
        heldout = array[torch.randperm(len(array), generator=g)[: args.eval_size]]
    if heldout.shape[1:] != model.event_shape or len(heldout) < 2:
        raise UsageError(f"data {args.data!r} has shape {tuple(heldout.shape)}; the model in "
                         f"{args.checkpoint!r} needs (N >= 2, "
                         f"{', '.join(map(str, model.event_shape))})")
    metrics, _ = evaluate_model(model, heldout, toy, args.particles, args.samples, args.seed)
    report = {"checkpoint": str(args.checkpoint), "step": state.get("step"), "data": name,
              **metrics}
    out = Path(args.out or f"{Path(args.checkpoint).with_suffix('')}.metrics.json")
    _write_json(out, report)
    print(json.dumps(_finite(report), indent=2))
    print(f"wrote {out}", file=sys.stderr)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _t_min(text: str) -> float | tuple[float, float]:
    parts = [float(v) for v in text.split(",")]
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected a number or lo,hi, got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _int(parser: argparse.ArgumentParser, flag: str, default: int | None, text: str,
         metavar: str = "N") -> None:
    """A positive integer option; its default goes into the help."""
    suffix = "" if default is None else f" (default {default})"
    parser.add_argument(flag, type=_positive, default=default, metavar=metavar, help=text + suffix)


def _evaluation_options(parser: argparse.ArgumentParser) -> None:
    _int(parser, "--particles", 64, "IWAE particles of the NLL bound", "K")
    _int(parser, "--eval-size", 2000, "held-out points: drawn from a toy, or rows of a .npy file "
         "chosen at random (fit holds out at most a fifth of them)")
    _int(parser, "--samples", 10_000, "model samples for the metrics and figures")


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _int(parser, "--threads", None, "torch CPU threads (default: torch's choice)")


def build_parser() -> argparse.ArgumentParser:
    """The ``ntmdist`` argument parser with its ``fit``, ``sample`` and ``evaluate`` commands."""
    parser = argparse.ArgumentParser(
        prog="ntmdist", description="Normalizing Trajectory Models: train, sample, evaluate.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run, parser=sub)
        return sub

    data_help = f"a built-in toy ({', '.join(sorted(TOYS))}) or a .npy file of shape (N, D)"
    p = command("fit", _fit, "train an NTM (and a Gaussian baseline), evaluate, plot")
    p.add_argument("data", help=data_help)
    _int(p, "--steps", 2000, "optimiser steps")
    _int(p, "--T", 4, "reverse steps", "T")
    p.add_argument("--train-T", type=int, nargs="+", metavar="T",
                   help="train on several numbers of reverse steps, e.g. 4 8 16 (a multi-T "
                        "model; default: --T only); sample --T picks one")
    p.add_argument("--t-min", type=_t_min, default=(0.0, 0.05), metavar="T0",
                   help="time of level 0: a number, or lo,hi drawn per example (default 0,0.05)")
    p.add_argument("--shift", type=float, default=1.0, metavar="M",
                   help="SD3-style grid shift m (0: uniform; default 1, the best measured on "
                        "the checkerboard)")
    _int(p, "--batch-size", 512, "examples per step", "B")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    _int(p, "--width", 256, "predictor MLP width", "W")
    _int(p, "--depth", 4, "predictor residual blocks", "K")
    _int(p, "--transporter-width", 128, "hidden width of the transporter's networks", "W")
    p.add_argument("--step-flow", choices=("none", "auto"), default="auto",
                   help="per-step bijectors conditioned on the predictor (default auto; none: "
                        "the paper's configuration)")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction,
                   help="also train the chain with Gaussian steps (default: on for toys)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<data>)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in DIR")
    _int(p, "--checkpoint-every", 500, "steps between checkpoints")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show progress bars (default on)")
    _evaluation_options(p)
    _common_options(p)
    p = command("sample", _sample, "draw samples from a checkpoint into .npy and .png")
    p.add_argument("checkpoint", help="a model.pt written by fit")
    _int(p, "--n", 10_000, "number of samples")
    _int(p, "--T", None, "reverse steps (default: the trained T)", "T")
    p.add_argument("--out", metavar="FILE", help="samples .npy (default CHECKPOINT.samples.npy)")
    p.add_argument("--png", metavar="FILE", help="figure (default: --out with .png)")
    _common_options(p)
    p = command("evaluate", _evaluate, "held-out metrics of a checkpoint, as JSON")
    p.add_argument("checkpoint", help="a model.pt written by fit")
    p.add_argument("data", help=data_help)
    p.add_argument("--out", metavar="FILE", help="JSON file (default CHECKPOINT.metrics.json)")
    _evaluation_options(p)
    _common_options(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns 0 on success.

    Usage errors exit with status 2 (:class:`SystemExit`). The number of torch threads is
    restored on return, so in-process calls leave torch as they found it.
    """
    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        args.run(args)
    except UsageError as error:
        args.parser.error(str(error))
    finally:
        torch.set_num_threads(threads)
    return 0
