"""Sequential passes of the vector bijectors: quality against sampling speed at D = 64.

The default vector transporter and per-step bijector are masked autoregressive splines; their
inverses (which sampling runs) take one network pass per group of features. ``passes=D`` is
fully autoregressive, ``passes=2`` a coupling layer. This benchmark measured the default of
``ntmdist.defaults.vector_passes``.

Data: scikit-learn's 8x8 digits flattened to vectors (D = 64), dequantised, 1500 for training
and 297 held out. Models: the default vector NTM (``Schedule(4, t_min=(0, 0.05), shift=1)``) with
the per-step bijector ("step flow") and without it (the paper's configuration), with the
transporter (and the step flow) at ``passes`` in ``--passes``. Every model sees the same data
stream, optimiser steps, batch and learning-rate schedule. Metrics: bits/dim of the held-out
digits (IWAE bound, ``--particles``; lower is better; the digits' dequantisation scaling
included), samples per second of ``model.sample(128)`` (untrained speed does not depend on the
weights) and its ratio to the fully autoregressive model of the same kind.

Usage::

    python benchmarks/passes.py                 # 600 steps, passes 2 4 8 64: about 15 minutes
    python benchmarks/passes.py --steps 50 --passes 2 64 --particles 4   # a smoke run
    python benchmarks/passes.py --print benchmarks/results/passes.json   # re-print saved tables

Writes ``benchmarks/results/passes.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _results import read_results, write_results
from _timing import seconds, table

import ntmdist as nd
from ntmdist.data import DIGITS_LOG_SCALE, digits
from ntmdist.metrics import bits_per_dim
from ntmdist.train import fit

HERE = Path(__file__).resolve().parent
D = 64


def model(passes: int, step_flow: bool, seed: int = 0) -> nd.NTM:
    """The default vector NTM with ``passes`` groups in its bijectors, seeded."""
    sched = nd.Schedule(4, t_min=(0.0, 0.05), shift=1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nd.NTM((D,), sched, step_flow="auto" if step_flow else None,
                      transporter_options={"passes": passes},
                      step_flow_options={"passes": passes} if step_flow else None)


def run(args: argparse.Namespace) -> list[dict]:
    x = digits(generator=torch.Generator().manual_seed(0))[0].flatten(1)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    train, held = x[perm[:1500]], x[perm[1500:]]
    rows = []
    for step_flow in (True, False):
        for passes in args.passes:
            m = model(passes, step_flow, args.seed)
            with torch.no_grad():
                rate = 128 / seconds(lambda m=m: m.sample(128), "cpu", args.repeats,
                                     warmup=lambda m=m: m.sample(2))
            start = time.perf_counter()
            ema = fit(m, train, steps=args.steps, batch_size=args.batch_size, lr=2e-3,
                      progress=args.progress, seed=args.seed).ema_model
            train_s = time.perf_counter() - start
            g = torch.Generator().manual_seed(2)
            with torch.no_grad():
                nll = torch.cat([-ema.iwae(c, particles=args.particles, generator=g)
                                 for c in held.split(50)]).mean().item()
            rows.append(dict(model="step flow" if step_flow else "paper (no step flow)",
                             passes=passes, bpd=bits_per_dim(nll / D, DIGITS_LOG_SCALE),
                             rate=rate, train_s=train_s))
            print(rows[-1], flush=True)
    for r in rows:
        full = next(q for q in rows if q["model"] == r["model"] and q["passes"] == max(
            args.passes))
        r["vs_full"] = r["rate"] / full["rate"]
    return rows


def report(rows: list[dict]) -> str:
    return table("passes (D = 64 digits as vectors)", rows, [
        ("model", "model", ""), ("passes", "passes", ""), ("bits/dim", "bpd", ".3f"),
        ("samples/s", "rate", ".0f"), ("vs most passes", "vs_full", ".3g"),
        ("train s", "train_s", ".0f")])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--passes", type=int, nargs="+", default=[2, 4, 8, 64])
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batches")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "passes.json")
    parser.add_argument("--print", nargs="+", type=Path, metavar="JSON",
                        help="only re-print the tables of saved results")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.print:
        for path in args.print:
            print(report(read_results(path)["results"]), end="\n\n")
        return
    if any(not 1 <= p <= D for p in args.passes):
        parser.error(f"--passes must be in 1..{D}")
    torch.set_num_threads(args.threads)
    rows = run(args)
    print(report(rows))
    write_results(args, results=rows)


if __name__ == "__main__":
    main()
