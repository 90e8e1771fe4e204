"""The ``ntmdist`` argument parser (:func:`build_parser`) and entry point (:func:`main`); the
command bodies are :mod:`ntmdist.cli.commands`.

Example:
    >>> args = build_parser().parse_args(["fit", "checkerboard", "--steps", "10"])
    >>> args.command, args.steps, args.T
    ('fit', 10, 4)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch

from ..data import TOYS
from .commands import evaluate_command, fit_command, sample_command
from .evaluation import UsageError

__all__ = ["build_parser", "main"]


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


def _condition_options(parser: argparse.ArgumentParser, given: bool = False) -> None:
    group = parser.add_mutually_exclusive_group()
    rows = "one or one per sample" if given else "a row per data row"
    group.add_argument("--context", metavar="FILE",
                       help=f"context vectors: a .npy array (N, C) of real numbers, {rows}")
    group.add_argument("--labels", metavar="FILE",
                       help=f"class labels: a .npy array (N,) of integers >= 0, {rows}")
    if given:
        group.add_argument("--given", metavar="VALUES",
                           help="one condition for every sample: a context vector 'c1,c2,...' "
                                "or a label")


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
    p = command("fit", fit_command, "train an NTM (and a Gaussian baseline), evaluate, plot")
    p.add_argument("data", help=data_help)
    _condition_options(p)
    _int(p, "--steps", 2000, "optimiser steps")
    _int(p, "--T", 4, "reverse steps", "T")
    p.add_argument("--train-T", type=int, nargs="+", metavar="T",
                   help="train on several numbers of reverse steps, e.g. 4 8 16 (a multi-T "
                        "model; default: --T only); sample --T picks one")
    _int(p, "--train-particles", 1, "forward trajectories per example: K > 1 trains on the "
         "importance-weighted bound of level 0 (K times the compute per step)", "K")
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
    p = command("sample", sample_command, "draw samples from a checkpoint into .npy and .png")
    p.add_argument("checkpoint", help="a model.pt written by fit")
    _condition_options(p, given=True)
    _int(p, "--n", None, "number of samples (default: the rows of --context or --labels when "
         "there are several, else 10000)")
    _int(p, "--T", None, "reverse steps (default: the trained T)", "T")
    p.add_argument("--out", metavar="FILE", help="samples .npy (default CHECKPOINT.samples.npy)")
    p.add_argument("--png", metavar="FILE", help="figure (default: --out with .png)")
    _common_options(p)
    p = command("evaluate", evaluate_command, "held-out metrics of a checkpoint, as JSON")
    p.add_argument("checkpoint", help="a model.pt written by fit")
    p.add_argument("data", help=data_help)
    _condition_options(p)
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
