"""Ablations of the default vector NTM on the checkerboard: toy2d's "NTM T=4" row with knobs.

Each run trains one NTM T=4 exactly as ``benchmarks/toy2d.py`` does (``ntmdist.train.fit``,
3000 steps of batch 512, peak lr 2e-3, EMA 0.999, ``Schedule(4, t_min=(0, 0.05), shift=1)``)
with one or more settings changed, then reports the IWAE NLL (256 particles, 2000 held-out
points; an upper bound), the fraction of 10k samples on the support and the energy distance to
10k held-out points. Runs are independent processes, so several can run side by side (on a
machine with more cores, or on a GPU with ``--device cuda``); each appends one JSON line to
``--out``. ``--model nsf`` trains toy2d's zuko NSF row instead (exact NLL), for comparisons
such as learning-rate sweeps of both models. ``--bound-particles K ...`` also reports the
bound with each of those particle counts on the same points (``iwae_K``; K = 1 is the ELBO), to
see how tight 256 particles are. ``--train-steps 4 8`` trains one model on both numbers of steps
(``NTM(train_steps=...)``) and also reports the other T (``T8_nll``, ``T8_on_support``,
``T8_energy``). Every row records ``clipped``, the fraction of steps whose gradient norm
(before clipping) exceeded 1. ``--train-particles K`` trains on the importance-weighted bound
with K forward trajectories per example instead of the trajectory NLL
(``NTM(train_particles=K)``).

Usage::

    python benchmarks/ablate.py --tag default
    python benchmarks/ablate.py --tag step-bins-8 --step-bins 8
    python benchmarks/ablate.py --tag step-bins-8-seed-1 --step-bins 8 --seed 1
    python benchmarks/ablate.py --tag nsf-lr-3e-3 --model nsf --lr 3e-3   # toy2d's zuko NSF
    python benchmarks/ablate.py --tag bound --bound-particles 1 16 64 1024  # bound tightness
    python benchmarks/ablate.py --tag grad-clip-0 --grad-clip 0   # no gradient clipping
    python benchmarks/ablate.py --tag multi-t --train-steps 4 8   # the paper's multi-T training
    python benchmarks/ablate.py --tag iwae-4 --train-particles 4 --batch-size 128  # IWAE loss
    python benchmarks/ablate.py --tag quick --steps 300        # a smoke run
    python benchmarks/ablate.py --print benchmarks/results/ablate.jsonl  # every run as a table
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import zuko
from _results import append_row, read_results, runs_table
from toy2d import nll_of, nsf_loss

import ntmdist as nd
from ntmdist.data import toy
from ntmdist.metrics import energy_distance, fraction_on_support
from ntmdist.train import fit

HERE = Path(__file__).resolve().parent
BINS, STEP = nd.defaults.vector_splines(2)


def build(args: argparse.Namespace) -> nd.NTM:
    """The default vector NTM on 2D data with the knobs of ``args`` (seeded by the caller)."""
    lo_hi = (0.0, args.t_min_hi) if args.t_min_hi > 0 else 0.0
    schedule = nd.Schedule(steps=4, t_min=lo_hi, shift=args.shift)
    options: dict = {
        "transporter_options": dict(blocks=args.blocks, bins=args.bins, bound=args.bound,
                                    hidden=tuple(args.hidden)),
        "step_flow_options": dict(bins=args.step_bins, bound=args.step_bound,
                                  hidden=list(args.step_hidden)),
    }
    if args.predictor_width != 256 or args.predictor_depth != 4:
        options["predictor_options"] = dict(width=args.predictor_width,
                                            depth=args.predictor_depth)
    return nd.NTM((2,), schedule, train_steps=tuple(args.train_steps or (4,)),
                  train_particles=args.train_particles, **options)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    data = toy("checkerboard")
    held = data.sample(10_000, generator=torch.Generator().manual_seed(10_000))
    nsf = args.model == "nsf"
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        model = zuko.flows.NSF(2, transforms=3, hidden_features=(64, 64)) if nsf else build(args)
    start = time.perf_counter()
    result = fit(model, lambda n, g: data.sample(n, generator=g), steps=args.steps,
                 batch_size=args.batch_size, lr=args.lr, ema=args.ema, seed=args.seed,
                 progress=args.progress, device=args.device, grad_clip=args.grad_clip or None,
                 **({"loss_fn": nsf_loss} if nsf else {}))
    train_s = time.perf_counter() - start
    model = result.ema_model
    g = torch.Generator().manual_seed(1)
    device = next(model.parameters()).device
    with torch.no_grad():
        if nsf:  # toy2d's zuko NSF row: exact NLL on the same points
            with torch.random.fork_rng():
                torch.manual_seed(args.seed + 1)  # zuko samples from the global generator
                samples = model().sample((10_000,)).cpu()
            nll = -model().log_prob(held[: args.nll_points].to(device)).mean().item()
        else:
            samples = model.sample(10_000, generator=g).cpu()
    if not nsf:
        nll = nll_of(model, held.to(device), args, g)  # toy2d's: the same points and particles
    row = dict(tag=args.tag, nll=nll, on_support=fraction_on_support(samples, "checkerboard"),
               energy=energy_distance(samples, held), train_s=train_s,
               clipped=sum(n > 1.0 for n in result.history["grad_norm"]) / args.steps)
    for steps in sorted(set(args.train_steps or ()) - {4}) if not nsf else ():
        schedule = model.schedule.with_steps(steps)
        with torch.no_grad():
            s = model.sample(10_000, generator=g, schedule=schedule).cpu()
        row[f"T{steps}_nll"] = nll_of(model, held.to(device), args, g, schedule=schedule)
        row[f"T{steps}_on_support"] = fraction_on_support(s, "checkerboard")
        row[f"T{steps}_energy"] = energy_distance(s, held)
    for k in args.bound_particles if not nsf else ():
        row[f"iwae_{k}"] = nll_of(model, held.to(device), argparse.Namespace(
            particles=k, nll_points=args.nll_points), g, chunk=max(1, 64_000 // k))
    return row


COLUMNS = [("tag", "tag", ""), ("NLL (nats)", "nll", ".4f"), ("on support", "on_support", ".2%"),
           ("energy", "energy", ".5f"), ("train s", "train_s", ".0f")]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", default="default", help="name of this run in the table")
    p.add_argument("--model", choices=("ntm", "nsf"), default="ntm",
                   help="nsf: toy2d's zuko NSF row instead (for learning-rate sweeps)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--grad-clip", type=float, default=1.0,
                   help="maximum gradient norm (toy2d's 1.0); 0 for none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shift", type=float, default=1.0, help="grid shift m")
    p.add_argument("--t-min-hi", type=float, default=0.05,
                   help="t_min drawn in (0, this) during training (0: fixed t_min = 0)")
    p.add_argument("--blocks", type=int, default=2, help="transporter spline blocks")
    p.add_argument("--bins", type=int, default=BINS,
                   help="transporter spline bins")
    p.add_argument("--bound", type=float, default=5.0, help="transporter spline domain [-B, B]")
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 128],
                   help="transporter MADE widths")
    p.add_argument("--step-bins", type=int, default=STEP["bins"], help="per-step bijector bins")
    p.add_argument("--step-bound", type=float, default=STEP["bound"],
                   help="per-step bijector spline domain [-B, B]")
    p.add_argument("--step-hidden", type=int, nargs="+", default=STEP["hidden"],
                   help="per-step bijector MADE widths")
    p.add_argument("--train-steps", type=int, nargs="*", default=None, metavar="T",
                   help="train on several T (e.g. 4 8); the extra T are evaluated too")
    p.add_argument("--train-particles", type=int, default=1, metavar="K",
                   help="train on the importance-weighted bound with K trajectories per example "
                        "(default 1: the trajectory NLL)")
    p.add_argument("--predictor-width", type=int, default=256)
    p.add_argument("--predictor-depth", type=int, default=4)
    p.add_argument("--particles", type=int, default=256)
    p.add_argument("--bound-particles", type=int, nargs="*", default=[], metavar="K",
                   help="also report the NLL bound with these particle counts (1: the ELBO)")
    p.add_argument("--nll-points", type=int, default=2000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--out", type=Path, default=HERE / "results" / "ablate.jsonl")
    p.add_argument("--print", nargs="+", type=Path, metavar="JSONL",
                   help="only print the saved runs as a table")
    return p


def main(argv: list[str] | None = None) -> dict | None:
    p = build_parser()
    args = p.parse_args(argv)
    if args.print:
        for path in args.print:
            print(runs_table(read_results(path), p, COLUMNS), end="\n\n")
        return None
    if args.model == "nsf" and args.train_particles != 1:
        p.error("--train-particles trains an NTM; zuko NSF's NLL is exact (--model nsf)")
    row = run(args)
    row = append_row(args, row)
    print(f"{row['tag']}: NLL {row['nll']:.4f} nats, on support {row['on_support']:.2%}, "
          f"energy {row['energy']:.5f}, train {row['train_s']:.0f} s; appended to {args.out}")
    return row


if __name__ == "__main__":
    main()
